"""What training records for a records-based coreset method (``adaptive``): every visited
example's adversarial loss, and the validation split's robust error per class.

The losses are a field of the job's per-example ledger (engine/ledger.py, ``adaptive_loss``).
Under DDP every rank records the examples it trains; at the end of the epoch the ledger
exchanges the ranks' records (``backend.gather``), so every rank holds the same records and
rank 0's draw is made from all of them, whatever the number of workers.
"""

from __future__ import annotations

import time

import torch

from ..config import JobConfig
from ..methods import MethodSpec
from .ledger import Ledger
from .runtime import budget_and_seed

LOSS_FIELD = "adaptive_loss"  # the ledger field: last recorded adversarial loss, NaN: none yet


class TrainingRecords:
    def __init__(self, ledger: Ledger | int):
        # the job's ledger; a number n: a ledger of its own over examples 0..n-1
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(torch.arange(ledger), ())
        self.ledger.declare(LOSS_FIELD, fill=float("nan"))
        self.class_error: torch.Tensor | None = None  # validation robust error per class

    @property
    def scores(self) -> torch.Tensor:
        """The last recorded adversarial loss per position into the training set (NaN: none)."""
        return self.ledger.fields[LOSS_FIELD]

    def record(self, positions: torch.Tensor, losses: torch.Tensor) -> None:
        """The training loop's hook: per-example losses of one batch."""
        index = self.ledger.keys[positions.detach().cpu()]  # position -> global example index
        self.ledger.write(LOSS_FIELD, index, losses.detach().float())

    def end_epoch(self, gather) -> None:
        """Merge this epoch's records from every rank (``gather(obj) -> [obj of each rank]``). A job
        exchanges its whole ledger instead (``Ledger.end_epoch``), this field with the others."""
        self.ledger.exchange(LOSS_FIELD, gather)

    @property
    def coverage(self) -> float:
        """The fraction of examples with a record."""
        return float((~torch.isnan(self.scores)).float().mean())

    def draw(self, method: MethodSpec, cfg: JobConfig, labels: torch.Tensor, epoch: int):
        """The next subset from the records: ``(positions, weights, timings)``."""
        t0 = time.perf_counter()
        c = cfg.coreset
        budget, seed = budget_and_seed(cfg, labels.numel(), epoch)
        share, floor = c.params.uniform_share, c.params.class_floor  # AdaptiveParams (methods.py)
        core = method.select_fn()(self.scores, labels, budget, class_error=self.class_error, uniform=share,
                                  floor=floor, seed=seed)
        return core.indices, core.weights, {"greedy": time.perf_counter() - t0}

    def state_dict(self, scores: bool = True) -> dict:
        """``scores=False``: without the scores, which a job checkpoints with its ledger."""
        return {"scores": self.scores.clone() if scores else None, "class_error": self.class_error}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scores") is not None:  # a checkpoint from before the ledger
            self.ledger.reset(LOSS_FIELD, state["scores"].float())
        self.class_error = None if state.get("class_error") is None else state["class_error"].float().cpu()
