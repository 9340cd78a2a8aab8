"""Perceptual Adversarial Training (Laidlaw et al., 2021): CE on a Fast-LPA example.

The attack maximises the margin loss (``max_{j != y} z_j - z_y``, the paper code's
``MarginLoss`` with kappa = inf), not CE; where we differ from the paper is listed in
docs/objectives.md, "PAT against the paper".

``spec.epsilon`` is a bound on an LPIPS-style distance, not on pixels: with
the model's own features (the default, "PAT-self") the paper's CIFAR-10
value is :data:`PAT_DEFAULT_EPSILON` = 0.5. With an external backbone
(``spec.params.lpips_weights``) the scale of the distance is that backbone's.
This is the slowest objective: each attack step costs a forward/backward
plus one extra forward for the finite-difference step-size estimate, and
the final projection costs ``bisection_steps`` more forwards.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distributed_adcs.attacks import ImageNetFeatures, PerceptualDistance, fast_lpa, load_backbone
from distributed_adcs.config import ObjectiveConfig
from distributed_adcs.objectives.base import Objective, margin_attack_loss

PAT_DEFAULT_EPSILON = 0.5


class PAT(Objective):
    """CE on the fast Lagrangian perceptual attack's (margin-loss) adversarial example;
    ``spec.params`` is a ``PatParams`` (``lam``, ``lpips_weights``)."""

    def __init__(self, spec: ObjectiveConfig) -> None:
        super().__init__(spec)
        self._backbone: ImageNetFeatures | None = None

    def default_step_size(self) -> float:
        """``epsilon`` (LPIPS units per step, decayed 10x over the run), as in the paper's code."""
        return self.spec.epsilon

    def distance(self, model: nn.Module, device: torch.device) -> PerceptualDistance:
        """The perceptual distance: an external backbone if configured, else the model's features."""
        weights = self.spec.params.lpips_weights
        if weights is None:
            return PerceptualDistance.from_model(model)
        if self._backbone is None:
            self._backbone = load_backbone(weights)
        backbone = self._backbone.to(device)
        return PerceptualDistance(backbone, backbone.perceptual_modules())

    def _inner_max(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        return fast_lpa(
            model,
            x,
            margin_attack_loss(y),
            self.distance(model, x.device),
            epsilon=self.spec.epsilon,
            steps=self.spec.steps,
            step_size=self.step_size,
            lam=self.spec.params.lam,
            generator=generator,
        )
