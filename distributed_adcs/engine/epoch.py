"""One adversarial training epoch and the per-epoch validation.

Weighted loss (coreset training). A coreset of ``k`` examples with weights ``w_i`` is the
selector's estimate of the full data: ``sum_i w_i loss_i ~ sum_j loss_j`` over the ``N``
training examples (and the same for gradients). It is trained with normalised weights
``v_i = w_i * k / N``, and each batch minimises ``mean_b(v_i * loss_i)``. Averaged over an
epoch this is ``(1/k) sum_i v_i loss_i = (1/N) sum_i w_i loss_i``, the estimate of the
full-data mean loss ``(1/N) sum_j loss_j``; with unit weights (full data) it is the plain mean,
so the learning rate means the same thing in both phases.

``N`` is the size of the training set, not ``sum_i w_i``: CRAIG's and random's weights sum to
``N``, but GradMatch's matching coefficients do not, and dividing by their own sum would scale
the coreset gradient by ``N / sum_i w_i`` away from the full-data gradient it matches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from ..progress import progress
from .checkpoint import unwrap
from .boundary import BoundarySteps
from .ledger import BatchLedger, Ledger
from .schedule import EpochSchedule


@dataclass
class EpochStats:
    loss: float  # weighted mean training loss
    adv_accuracy: float  # accuracy on the training adversarial examples
    examples: int
    seconds: float
    attack_seconds: float


def normalised_weights(weights: torch.Tensor, n_total: int) -> torch.Tensor:
    """``v = w * k / N`` for a coreset of ``k`` weights standing for ``N`` examples (see the
    module docstring); mean 1 when the weights sum to ``N``."""
    return weights * (weights.numel() / n_total)


def train_epoch(model: torch.nn.Module, objective, batches: Iterable, optimizer: torch.optim.Optimizer,
                schedule: EpochSchedule, epoch: int, num_batches: int, *,
                generator: torch.Generator | None = None, desc: str = "train",
                record: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
                scaler: torch.amp.GradScaler | None = None,
                after_step: Callable[[], None] | None = None, ledger: Ledger | None = None,
                boundary: BoundarySteps | None = None) -> EpochStats:
    """Train one epoch of adversarial training on ``batches`` (which carry ``.weight``).

    The attack runs on the bare model (no DDP collective for attack passes) with the BatchNorm
    mode the objective declares; the update forward always runs in train mode. ``after_step``
    runs after every optimiser step that changed the weights (weight averaging). ``boundary``:
    extra steps for the batch's examples nearest the boundary (engine/boundary.py; the margins
    are kept in ``ledger``).
    """
    if boundary is not None:  # its margins live in the ledger: Job passes both
        assert ledger is not None
        boundary.prepare(ledger)
    bare = unwrap(model)
    loss_sum = correct = seen = 0.0
    attack_s = 0.0
    start = time.perf_counter()
    for i, batch in enumerate(progress(batches, desc=desc, total=num_batches)):
        schedule.set(epoch + i / max(num_batches, 1))
        t0 = time.perf_counter()
        # an objective that keeps per-example state (objective.uses_ledger) gets the batch's entries
        kw = {"state": BatchLedger(ledger, batch, epoch)} if ledger is not None and objective.uses_ledger else {}
        x_adv = objective.perturb(bare, batch.x, batch.y, generator=generator, **kw)
        if boundary is not None:  # only the gathered share of the batch takes the extra steps
            assert ledger is not None
            x_adv = boundary.refine(bare, batch.x, x_adv, batch.y, batch.index, ledger)
        attack_s += time.perf_counter() - t0
        losses, logits_adv = objective.update_loss(model, batch.x, x_adv, batch.y, **kw)  # train-mode BN
        if record is not None:  # each example's adversarial loss, for records-based selection
            record(batch.position, losses.detach())
        if boundary is not None:  # the margins of this forward, already paid for
            assert ledger is not None
            boundary.record(ledger, batch.index, logits_adv, batch.y)
        loss = (losses * batch.weight).mean()
        optimizer.zero_grad(set_to_none=True)
        stepped = True
        if scaler is not None:  # fp16: a scaled loss, skipped steps on overflow
            scale = scaler.get_scale() if after_step is not None else 0.0
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            # the scaler lowers its scale exactly when it skipped the step (inf/NaN gradients)
            stepped = after_step is None or scaler.get_scale() >= scale
        else:
            loss.backward()
            optimizer.step()
        if after_step is not None and stepped:
            after_step()
        n = batch.y.shape[0]
        loss_sum += loss.item() * n
        correct += (logits_adv.argmax(1) == batch.y).sum().item()
        seen += n
    seconds = time.perf_counter() - start
    return EpochStats(loss_sum / max(seen, 1), correct / max(seen, 1), int(seen), seconds, attack_s)
