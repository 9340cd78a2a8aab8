"""Learning-rate schedules as functions of fractional epoch progress.

The schedule is indexed by ``t = epoch + batch / batches_in_epoch`` over the epochs that
actually run, so a coreset epoch (fewer batches) advances the schedule by exactly one epoch,
like a full-data epoch. The schedule's only state is ``t``, which checkpoints restore.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..config import TrainConfig

# name -> f(t / epochs in [0, 1], cfg) -> multiplier of the peak lr
SCHEDULES: dict[str, Callable[[float, TrainConfig], float]] = {
    "constant": lambda p, c: 1.0,
    "piecewise": lambda p, c: c.gamma ** sum(p >= m for m in c.milestones),
    "cosine": lambda p, c: 0.5 * (1.0 + math.cos(math.pi * p)),
    # one cycle: linear 0 -> peak over the first 40%, then linear back to 0 (Wong et al.)
    "onecycle": lambda p, c: p / 0.4 if p < 0.4 else max(0.0, (1.0 - p) / 0.6),
}


class EpochSchedule:
    """Sets the optimiser's learning rate from fractional epoch progress."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig):
        self.optimizer, self.cfg, self.t = optimizer, cfg, 0.0
        self.fn = SCHEDULES[cfg.schedule]

    def lr_at(self, t: float) -> float:
        return self.cfg.lr * self.fn(min(max(t / self.cfg.epochs, 0.0), 1.0), self.cfg)

    def set(self, t: float) -> float:
        """Move to progress ``t`` (epochs) and return the learning rate now in force."""
        self.t = t
        lr = self.lr_at(t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.set(float(state["t"]))
