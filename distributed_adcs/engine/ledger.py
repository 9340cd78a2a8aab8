"""The per-example ledger: named per-example tensors keyed by the global example index.

What training keeps about each example from one visit to the next lives here, in one place:
FGSM-PGI's cached prior perturbation and momentum (objectives/fgsm_pgi.py), ``adaptive``'s last
adversarial loss (engine/records.py), a recorded margin. A field is one tensor ``[N, *shape]``
over the job's ``N`` training examples, on the CPU (what a checkpoint holds; a batch's rows are
moved to the training device when read).

DDP: every rank holds a full copy. A rank writes its own examples' entries into its copy as it
trains them, and logs which it wrote; at the end of the epoch the ranks exchange the entries they
wrote (``backend.gather``: indices and values) and every rank applies all of them in rank order,
so every copy is the same afterwards, and the same as one process's (an example trained on two
ranks in one epoch, DDP's padding, keeps the last rank's entry, as it would keep its last visit's
in one process). Why a full copy does not fit at ImageNet scale, and how it would be partitioned
there: docs/scaling.md.

Augmentation: an image-shaped field is kept in the un-augmented frame. :class:`BatchLedger`
hands a batch its entries cropped and flipped as the batch's images were (``Batch.frame``) and
maps what the batch writes back.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor


class Ledger:
    """Per-example fields over the training examples whose global indices are ``keys``.

    Args:
        keys: int64 [N] the global index of each training example (``splits.train.indices``);
            row ``p`` of every field belongs to the example at position ``p``.
        example_shape: one example's image shape (C, H, W): the shape of image-shaped fields.
    """

    def __init__(self, keys: Tensor, example_shape: tuple[int, ...]):
        self.keys = keys.to(torch.int64).cpu()
        self.example_shape = tuple(int(s) for s in example_shape)
        top = int(self.keys.max()) + 1 if self.keys.numel() else 0
        self._row = torch.full((top,), -1, dtype=torch.int64)  # global index -> row; 8 bytes per index
        self._row[self.keys] = torch.arange(self.keys.numel())
        self.fields: dict[str, Tensor] = {}
        self._written: dict[str, list[Tensor]] = {}  # rows written this epoch, per field, in order

    def __len__(self) -> int:
        return int(self.keys.numel())

    def rows(self, index: Tensor) -> Tensor:
        """The rows of global indices ``index``; ``KeyError`` for one that is not a training example."""
        index = index.to(torch.int64).cpu()
        known = (index >= 0) & (index < len(self._row))
        rows = torch.full_like(index, -1)
        rows[known] = self._row[index[known]]
        if bool((rows < 0).any()):
            raise KeyError(f"not training examples: global indices {index[rows < 0][:5].tolist()}")
        return rows

    def has(self, name: str) -> bool:
        return name in self.fields

    def declare(self, name: str, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32,
                fill: float = 0.0) -> Tensor:
        """The field ``name``, created ``[N, *shape]`` filled with ``fill`` if it does not exist.
        Every rank declares the same fields (the exchange refuses one it does not know)."""
        if name not in self.fields:
            self.fields[name] = torch.full((len(self), *shape), fill, dtype=dtype)
        return self.fields[name]

    def reset(self, name: str, values: Tensor) -> None:
        """Set the whole field (e.g. a fresh random init). Not exchanged: every rank must compute
        the same ``values`` (draw them from a generator seeded without the rank)."""
        self.fields[name] = values.detach().cpu().clone()
        self._written.pop(name, None)

    def read(self, name: str, index: Tensor) -> Tensor:
        """The entries of the examples with global indices ``index`` (a CPU copy)."""
        return self.fields[name][self.rows(index)].clone()

    def write(self, name: str, index: Tensor, values: Tensor) -> None:
        """Set the entries of ``index`` in this rank's copy, and log them for :meth:`end_epoch`."""
        rows = self.rows(index)
        self.fields[name][rows] = values.detach().to(self.fields[name].dtype).cpu()
        self._written.setdefault(name, []).append(rows)

    def end_epoch(self, gather: Callable[[Any], list[Any]]) -> None:
        """Exchange the epoch's writes of every field (:meth:`exchange`, in name order: every rank
        declares the same fields, so every rank makes the same collectives)."""
        for name in sorted(self.fields):
            self.exchange(name, gather)

    def exchange(self, name: str, gather: Callable[[Any], list[Any]]) -> None:
        """Share this epoch's writes of ``name``: ``gather(obj) -> [obj of each rank]`` (rank
        order) of ``(global indices, values)``; every rank applies them all in rank order, so
        every copy ends with every rank's latest entries (a later rank's win a tie)."""
        chunks = self._written.pop(name, [])
        rows = torch.cat(chunks).unique() if chunks else torch.empty(0, dtype=torch.int64)
        mine = (self.keys[rows], self.fields[name][rows])  # this copy holds the rank's last write of each
        for index, values in gather(mine):
            self.fields[name][self.rows(index)] = values.to(self.fields[name].dtype)

    def nbytes_per_example(self) -> dict[str, int]:
        """Bytes per example of each field (docs/scaling.md)."""
        return {k: v[0].numel() * v.element_size() if len(v) else 0 for k, v in self.fields.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"keys": self.keys.clone(), "fields": {k: v.clone() for k, v in self.fields.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not torch.equal(state["keys"].to(torch.int64), self.keys):
            raise ValueError("the checkpoint's ledger is for other training examples")
        self.fields = {k: v.cpu().clone() for k, v in state["fields"].items()}
        self._written = {}


class BatchLedger:
    """The ledger as one batch sees it (the ``state`` an objective gets): its examples' entries,
    on the batch's device and, for image-shaped fields, in the batch's augmented frame.

    Attributes:
        index: int64 [B] the batch's global example indices.
        epoch: the epoch being trained.
        scratch: values one objective call hands to the next for this batch (the attack to the
            update), dropped with the batch.
    """

    def __init__(self, ledger: Ledger, batch: Any, epoch: int):
        self.ledger, self.index, self.epoch = ledger, batch.index, epoch
        self.frame, self.device = batch.frame, batch.x.device
        self.scratch: dict[str, Any] = {}

    def _framed(self, name: str) -> bool:
        return self.frame is not None and tuple(self.ledger.fields[name].shape[1:]) == self.ledger.example_shape

    def read(self, name: str) -> Tensor:
        values = self.ledger.read(name, self.index).to(self.device)
        return self.frame.apply(values) if self._framed(name) else values

    def write(self, name: str, values: Tensor) -> None:
        values = values.detach()
        if self._framed(name):  # back to the un-augmented frame; cut-off pixels keep their entries
            values = self.frame.back(values, self.ledger.read(name, self.index).to(values.device))
        self.ledger.write(name, self.index, values)
