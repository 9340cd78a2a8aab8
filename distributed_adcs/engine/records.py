"""What training records for a records-based coreset method (``adaptive``): every visited
example's adversarial loss, and the validation split's robust error per class.

Under DDP every rank records the examples it trains; at the end of the epoch the ranks'
records are gathered (``backend.gather``), so every rank holds the same records and rank 0's
draw is made from all of them, whatever the number of workers.
"""

from __future__ import annotations

import time

import torch

from ..config import JobConfig
from ..methods import MethodSpec
from .runtime import budget_and_seed


class TrainingRecords:
    def __init__(self, n: int):
        self.scores = torch.full((n,), float("nan"))  # last recorded adversarial loss per position
        self.class_error: torch.Tensor | None = None  # validation robust error per class
        self._epoch: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(self, positions: torch.Tensor, losses: torch.Tensor) -> None:
        """The training loop's hook: per-example losses of one batch."""
        self._epoch.append((positions.detach().cpu(), losses.detach().float().cpu()))

    def end_epoch(self, gather) -> None:
        """Merge this epoch's records from every rank (``gather(obj) -> [obj of each rank]``)."""
        mine = (torch.cat([p for p, _ in self._epoch]), torch.cat([v for _, v in self._epoch])) if self._epoch else (
            torch.empty(0, dtype=torch.int64), torch.empty(0))
        self._epoch = []
        for positions, values in gather(mine):  # rank order: a padded duplicate keeps the last rank's
            self.scores[positions] = values

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

    def state_dict(self) -> dict:
        return {"scores": self.scores.clone(), "class_error": self.class_error}

    def load_state_dict(self, state: dict) -> None:
        self.scores = state["scores"].float().cpu()
        self.class_error = None if state.get("class_error") is None else state["class_error"].float().cpu()
