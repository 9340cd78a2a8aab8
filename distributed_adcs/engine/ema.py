"""Weight averaging (``train.ema_decay``): an exponential moving average of a model's weights
and of its BatchNorm buffers, and the best epoch's model by validation robust accuracy.

The average is updated after every optimiser step that ran (an fp16 step that the gradient
scaler skipped on overflow changed nothing, so it is not averaged in). Its decay warms up as
``min(decay, (1 + t) / (10 + t))`` after ``t`` updates (the ``num_updates`` rule of
TensorFlow's ``ExponentialMovingAverage``): with a constant 0.999 the average of a 400-step run
would still be 67 % the initial random weights (0.999^400), while the warm-up makes early
averages follow the weights and reaches the set decay after ``(10 decay - 1) / (1 - decay)``
steps (89 for 0.9, 890 for 0.99, 8,990 for 0.999).

BatchNorm's running mean and variance are averaged like the weights; integer buffers
(``num_batches_tracked``) are copied. Under DDP every rank's parameters agree after every step,
so their averages do too; each rank's BatchNorm statistics are its own until the job's backend
gives every rank rank 0's buffers at the end of an epoch (``Job.run_epoch`` does that for the
average too), so after every epoch every rank holds the same average.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .checkpoint import unwrap

WARMUP = 10.0  # the (1 + t) / (WARMUP + t) warm-up of the decay (module docstring)


class WeightAverage:
    """The running average of ``model`` (a DDP wrapper or the bare model), itself a model:
    :attr:`model` is what validation and the final test evaluation run when averaging is on."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0  # optimiser steps averaged in so far
        self.model = copy.deepcopy(unwrap(model))
        for p in self.model.parameters():  # never trained: attacks on it need input gradients only
            p.requires_grad_(False)
        self._pairs = self._tensors(model)

    def _tensors(self, model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(average, source) pairs of every parameter and buffer, in state-dict order; the
        state dict's tensors share storage with the modules, and restoring copies in place."""
        ours, theirs = self.model.state_dict(), unwrap(model).state_dict()
        if list(ours) != list(theirs):
            raise ValueError("weight average: the model's parameters and buffers changed names")
        return [(ours[k], theirs[k]) for k in ours]

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (WARMUP + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Average in the model's weights after one optimiser step."""
        d = self.current_decay()
        for avg, new in self._pairs:
            if avg.is_floating_point():
                avg.mul_(d).add_(new.detach(), alpha=1.0 - d)
            else:
                avg.copy_(new)
        self.updates += 1

    @torch.no_grad()
    def reset(self) -> None:
        """Restart the average at the model's current weights (a resume from a checkpoint
        written without averaging)."""
        for avg, new in self._pairs:
            avg.copy_(new)
        self.updates = 0

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])  # copies in place: the pairs stay valid
        self.updates = int(state["updates"])


class BestModel:
    """The model of the epoch with the highest validation robust accuracy so far (ties keep the
    earlier epoch), as a CPU state dict of the model that was validated (the average when
    averaging is on). Rank 0 only: it alone validates, checkpoints and evaluates."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.val_robust_acc = float("-inf")
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, val_robust_acc: float, model: torch.nn.Module) -> bool:
        """Keep ``model`` if epoch ``epoch`` beats the best so far; return whether it did."""
        if val_robust_acc <= self.val_robust_acc:
            return False
        self.epoch, self.val_robust_acc = epoch, float(val_robust_acc)
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def state_dict(self) -> dict[str, Any] | None:
        if self.state is None:
            return None
        return {"epoch": self.epoch, "val_robust_acc": self.val_robust_acc, "model": self.state}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        self.epoch, self.val_robust_acc = int(state["epoch"]), float(state["val_robust_acc"])
        self.state = dict(state["model"])
