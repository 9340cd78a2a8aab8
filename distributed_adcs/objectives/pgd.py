"""Cross-entropy objectives on norm-ball adversarial examples: PGD (Madry et al.) and FGSM-RS."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from distributed_adcs.attacks import attack
from distributed_adcs.objectives.base import Objective, cross_entropy_attack_loss


class PGDObjective(Objective):
    """Madry et al. (2018): CE on a PGD adversarial example in the registry entry's ``norm``
    ball (``pgd_linf``: l-inf, ``pgd_l2``: l2)."""

    fixed_steps: ClassVar[int | None] = None  # set: always this many steps from a random start

    def _inner_max(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        fixed = self.fixed_steps is not None
        return attack(
            model,
            x,
            cross_entropy_attack_loss(y),
            geometry=self.norm,
            epsilon=self.spec.epsilon,
            step_size=self.step_size,
            steps=self.fixed_steps if self.fixed_steps is not None else self.spec.steps,
            random_start=True if fixed else self.spec.random_start,
            generator=generator,
        )


class FGSMRS(PGDObjective):
    """Wong, Rice & Kolter (2020), "Fast is better than free": FGSM with random start.

    delta ~ U[-eps, eps], one signed-gradient step of ``alpha = 1.25 * eps``
    (``spec.step_size`` overrides alpha), delta clamped back to [-eps, eps]
    and ``x + delta`` to [0, 1]; CE on the result. ``spec.steps`` and
    ``spec.random_start`` are ignored. The ball is the registry entry's (l-inf).
    """

    fixed_steps = 1

    def default_step_size(self) -> float:
        """``alpha = 1.25 * epsilon``, the paper's choice."""
        return 1.25 * self.spec.epsilon
