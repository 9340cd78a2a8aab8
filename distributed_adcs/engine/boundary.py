"""Per-example extra steps near the decision boundary (the idea of BulletTrain, Hua et al.,
NeurIPS 2021), an option of every single-step objective (``objective.boundary_share``,
``objective.boundary_steps``; docs/attack_compute.md).

Each batch is attacked by its objective's single step as usual. Then the ``share`` of the batch
whose recorded adversarial margin is nearest 0 (smallest ``|z_y - max_{j != y} z_j|``: the
examples nearest the boundary, on either side) are gathered into a smaller batch and get
``steps`` more PGD steps from their single-step perturbation; the others keep their single-step
example. Only the gathered examples go through those steps, so they cost ``share * steps`` passes
per example, which the pass counters show (a mask over the whole batch would cost ``steps``).

The margin comes from the update's forward (``logits_adv``, already paid for) and is kept in the
job's ledger (``engine/ledger.py``, field ``margin``; DDP ranks exchange it with the rest). An
example not seen yet has no margin (NaN) and counts as nearest the boundary: in the first epoch
the share is then the first examples of each (shuffled) batch, a random share.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import attack, bn_mode
from ..attacks.geometry import resolve_geometry
from ..config import ObjectiveConfig
from ..objectives.base import cross_entropy_attack_loss
from .ledger import Ledger

MARGIN = "margin"  # the ledger field: z_y - max_{j != y} z_j of the example last trained on


class StartFrom:
    """The objective's geometry, with its 'random start' replaced by a given perturbation: the
    shared attack loop (attacks/pgd.py) then continues from the single-step example."""

    def __init__(self, geometry, start: Tensor):
        self.geometry, self.start = geometry, start

    def random_init(self, x, eps, generator):
        return self.start

    def step(self, delta, grad, step_size):
        return self.geometry.step(delta, grad, step_size)

    def project(self, delta, eps):
        return self.geometry.project(delta, eps)


def margins(logits: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j`` per example: > 0 classified correctly, its size the distance."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, num_classes=logits.shape[1]).bool(), float("-inf"))
    return true - others.amax(dim=1)


def nearest(margin: Tensor, count: int) -> Tensor:
    """Positions of the ``count`` smallest ``|margin|`` (NaN, never seen, first), ties in batch
    order (a stable sort: the batch order is the epoch's shuffle)."""
    key = margin.abs().nan_to_num(nan=-1.0)  # a NaN sorts before every real |margin| >= 0
    return torch.sort(key, stable=True).indices[:count]


class BoundarySteps:
    def __init__(self, objective, cfg: ObjectiveConfig):
        self.objective, self.share, self.steps = objective, cfg.boundary_share, cfg.boundary_steps
        eps = cfg.epsilon
        self.step_size = cfg.boundary_step_size if cfg.boundary_step_size is not None else 2.5 * eps / self.steps
        self.radius = objective.extra_step_radius()  # the objective's own ball (n_fgsm: none)
        self.geometry = resolve_geometry(objective.norm)

    def count(self, batch_size: int) -> int:
        """Examples of a batch of ``batch_size`` that get the extra steps: ``round(share * B)``."""
        return min(batch_size, math.floor(self.share * batch_size + 0.5))

    def prepare(self, ledger: Ledger) -> None:
        ledger.declare(MARGIN, fill=float("nan"))

    def refine(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor,
               ledger: Ledger) -> Tensor:
        """``x_adv`` with the nearest share's rows replaced by ``steps`` more PGD steps."""
        chosen = nearest(ledger.read(MARGIN, index), self.count(x.shape[0])).to(x.device)
        if chosen.numel() == 0:
            return x_adv
        xs, ys = x[chosen], y[chosen]
        start = StartFrom(self.geometry, (x_adv[chosen] - xs).detach())
        with bn_mode(model, self.objective.spec.bn_mode):
            more = attack(model, xs, cross_entropy_attack_loss(ys), geometry=start, epsilon=self.radius,
                          step_size=self.step_size, steps=self.steps, random_start=True)
        out = x_adv.clone()
        out[chosen] = more
        return out

    def record(self, ledger: Ledger, index: Tensor, logits_adv: Tensor, y: Tensor) -> None:
        ledger.write(MARGIN, index, margins(logits_adv.detach().float(), y))


def make_boundary(objective, cfg: ObjectiveConfig) -> BoundarySteps | None:
    return BoundarySteps(objective, cfg) if cfg.boundary_share > 0 else None
