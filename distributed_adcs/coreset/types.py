"""Shared types and input validation for coreset selection.

A *selector* works on ONE group of examples (a class, or the whole data set) and
has the signature::

    fn(embeddings: Tensor[n, d], budget: int, *,
       generator: torch.Generator | None = None,
       mass: Tensor[n] | None = None) -> (indices: Tensor[k] int64, weights: Tensor[k] float32)

``indices`` are local row positions (0..n-1); ``weights`` are in *example units*:
``mass[i]`` says how many examples row ``i`` stands for (default 1 each; the
per-batch mode passes batch sizes), and e.g. CRAIG's weight of a chosen row is
the total mass of the rows it represents.  A ``budget >= n`` always yields every
row with ``weights == mass`` (unit weights by default).
"""

from __future__ import annotations

import numbers
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class Coreset:
    """A weighted subset of a data set.

    Attributes:
        indices: int64 positions into the embeddings/labels the coreset was
            selected from, unique and sorted in ASCENDING order.
        weights: float32, same length; weight ``weights[t]`` applies to the loss
            of example ``indices[t]`` (per-example weights, e.g. a CRAIG weight
            is the number of examples that example stands for).
    """

    indices: Tensor
    weights: Tensor

    def __post_init__(self) -> None:
        if self.indices.dtype != torch.int64 or self.indices.dim() != 1:
            raise ValueError("Coreset.indices must be a 1-D int64 tensor")
        if self.weights.dtype != torch.float32 or self.weights.dim() != 1:
            raise ValueError("Coreset.weights must be a 1-D float32 tensor")
        if self.indices.shape != self.weights.shape:
            raise ValueError(
                f"Coreset.indices ({tuple(self.indices.shape)}) and weights "
                f"({tuple(self.weights.shape)}) differ in length"
            )

    def __len__(self) -> int:
        return int(self.indices.numel())

    @classmethod
    def from_parts(cls, indices: list[Tensor], weights: list[Tensor]) -> "Coreset":
        """Concatenate per-group selections and sort them by ascending index.

        Args:
            indices: per-group global positions (int64), disjoint.
            weights: matching per-group weights.

        Returns:
            The combined coreset.
        """
        idx = torch.cat(indices).to(torch.int64)
        w = torch.cat(weights).to(device=idx.device, dtype=torch.float32)
        order = torch.argsort(idx)
        return cls(idx[order], w[order])


class Selector(Protocol):
    """Call signature shared by every registered selector (``distributed_adcs.methods``)."""

    def __call__(
        self,
        embeddings: Tensor,
        budget: int,
        *,
        generator: Optional[torch.Generator] = None,
        mass: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor]: ...


SelectorFn = Callable[..., tuple[Tensor, Tensor]]


def check_embeddings(embeddings: Tensor) -> None:
    """Raise ValueError unless ``embeddings`` is a finite, non-empty float [n, d] tensor."""
    if not isinstance(embeddings, Tensor):
        raise ValueError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be 2-D [n, d], got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {embeddings.dtype}")
    if embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise ValueError(f"embeddings must be non-empty, got shape {tuple(embeddings.shape)}")
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError("embeddings contain NaN or infinite values")


def check_labels(labels: Tensor, embeddings: Tensor) -> None:
    """Raise ValueError unless ``labels`` is an integer [n] tensor matching ``embeddings``."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D [n], got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (int64), got {labels.dtype}")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels has {labels.shape[0]} entries but embeddings has {embeddings.shape[0]} rows"
        )
    if labels.device != embeddings.device:
        raise ValueError(
            f"labels ({labels.device}) and embeddings ({embeddings.device}) are on different devices"
        )


def check_budget(budget: object, n: int) -> int:
    """Validate a budget and clip it to ``n``.

    Args:
        budget: requested number of examples; must be a positive integer
            (bools and floats such as ``10.0`` are rejected).
        n: number of available examples.

    Returns:
        ``min(budget, n)`` as a Python int.
    """
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    if int(budget) <= 0:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    return min(int(budget), n)


def check_mass(mass: Optional[Tensor], embeddings: Tensor) -> Tensor:
    """Return per-row masses as float64 on the embeddings' device (ones when ``None``)."""
    n = embeddings.shape[0]
    if mass is None:
        return torch.ones(n, dtype=torch.float64, device=embeddings.device)
    if mass.shape != (n,):
        raise ValueError(f"mass must have shape ({n},), got {tuple(mass.shape)}")
    if bool((mass <= 0).any()):
        raise ValueError("mass must be positive")
    return mass.to(device=embeddings.device, dtype=torch.float64)


def seeded_generator(seed: int) -> torch.Generator:
    """CPU generator for ``seed`` (CPU, so a seed draws the same on every device)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


@contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """Run torch CPU ops on one intra-op thread inside the block (restored after).

    For loops of many tiny ops (e.g. the matching pursuit): extra threads only
    add synchronisation there, and on a CPU shared with other busy processes a
    thread waiting for a descheduled peer can stall each op for milliseconds.
    No effect for non-CPU devices.  (The thread count is process-wide.)
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
