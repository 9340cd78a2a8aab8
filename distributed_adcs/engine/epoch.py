"""One adversarial training epoch and the per-epoch validation.

Weighted loss (coreset training). A coreset of ``k`` examples with weights ``w_i`` that sum to
the number of examples ``N`` they stand for is trained with normalised weights
``v_i = w_i * k / N`` (mean 1 over the coreset), and each batch minimises
``mean_b(v_i * loss_i)``. Averaged over an epoch this is ``(1/k) sum_i v_i loss_i =
(1/N) sum_i w_i loss_i``, the coreset's estimate of the full-data mean loss
``(1/N) sum_j loss_j``; with unit weights (full data) it is the plain mean, so the learning
rate means the same thing in both phases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import torch

from ..progress import progress
from .checkpoint import unwrap
from .schedule import EpochSchedule


@dataclass
class EpochStats:
    loss: float  # weighted mean training loss
    adv_accuracy: float  # accuracy on the training adversarial examples
    examples: int
    seconds: float
    attack_seconds: float


def normalised_weights(weights: torch.Tensor) -> torch.Tensor:
    """Scale coreset weights to mean 1 (see the module docstring)."""
    return weights * (weights.numel() / weights.sum())


def train_epoch(model: torch.nn.Module, objective, batches: Iterable, optimizer: torch.optim.Optimizer,
                schedule: EpochSchedule, epoch: int, num_batches: int, *,
                generator: torch.Generator | None = None, desc: str = "train") -> EpochStats:
    """Train one epoch of adversarial training on ``batches`` (which carry ``.weight``).

    The attack runs on the bare model (no DDP collective for attack passes) with the BatchNorm
    mode the objective declares; the update forward always runs in train mode.
    """
    bare = unwrap(model)
    loss_sum = correct = seen = 0.0
    attack_s = 0.0
    start = time.perf_counter()
    for i, batch in enumerate(progress(batches, desc=desc, total=num_batches)):
        schedule.set(epoch + i / max(num_batches, 1))
        t0 = time.perf_counter()
        x_adv = objective.perturb(bare, batch.x, batch.y, generator=generator)
        attack_s += time.perf_counter() - t0
        losses, logits_adv = objective.update_loss(model, batch.x, x_adv, batch.y)  # train-mode BN
        loss = (losses * batch.weight).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = batch.y.shape[0]
        loss_sum += loss.item() * n
        correct += (logits_adv.argmax(1) == batch.y).sum().item()
        seen += n
    seconds = time.perf_counter() - start
    return EpochStats(loss_sum / max(seen, 1), correct / max(seen, 1), int(seen), seconds, attack_s)
