"""N-FGSM (de Jorge et al., NeurIPS 2022, "Make Some Noise"): one signed step from strong noise,
never projected back to the epsilon-ball.

Checked against the authors' ``train.py`` (pdejorge/N-FGSM): ``eta ~ U(-k eps, k eps)`` clipped
so that ``x + eta`` is an image, the gradient of CE at ``x + eta``, ``delta = eta + alpha *
sign(grad)`` clipped to the image box again, and no clip to the eps-ball (their ``--clip -1``
default). CE at ``x + delta`` is the training loss. docs/objectives.md lists what differs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distributed_adcs.attacks import LinfGeometry, attack
from distributed_adcs.config import ObjectiveConfig
from distributed_adcs.objectives.base import Objective, cross_entropy_attack_loss


class UniformNoiseLinf(LinfGeometry):
    """l-inf signed steps from a uniform start of its own radius, whatever ball it is asked for.

    N-FGSM runs the shared attack loop in the unbounded ball (``epsilon = inf``): the loop's
    projection is then the identity, and the image box is the only constraint, as in the paper.
    """

    def __init__(self, radius: float) -> None:
        self.radius = radius  # pixel units: k * epsilon

    def random_init(self, x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        """Uniform in ``[-r, r]^d`` with ``r = min(radius, eps)``."""
        return super().random_init(x, min(self.radius, eps), generator)


class NFGSM(Objective):
    """CE on ``clip_[0,1](x + eta + alpha * sign(grad CE(x + eta)))``, ``eta ~ U(-k eps, k eps)``.

    ``k`` is ``spec.params.noise_mult`` (2, the paper's default; 0: no noise), ``alpha`` is
    ``spec.step_size`` (default ``epsilon``). The perturbation is not projected, so its l-inf norm
    reaches up to ``k * eps + alpha`` (``3 eps`` by default). Always one gradient step:
    ``spec.steps`` and ``spec.random_start`` are ignored. The noise is drawn from the job's
    generator; the attack runs in ``spec.bn_mode`` (``Objective.perturb``).
    """

    def __init__(self, spec: ObjectiveConfig) -> None:
        super().__init__(spec)
        if self.norm != "linf":  # the noise and the signed step are the l-inf ones
            raise ValueError(f"N-FGSM attacks in l-inf; its registry entry says {self.norm}")
        self._geometry = UniformNoiseLinf(spec.params.noise_mult * spec.epsilon)

    def default_step_size(self) -> float:
        """``alpha = epsilon``, the paper's choice (their ``--alpha`` equals ``--epsilon`` throughout)."""
        return self.spec.epsilon

    def extra_step_radius(self) -> float:
        """None: N-FGSM never projects, so its extra steps (``objective.boundary_share``) do not either."""
        return float("inf")

    def _inner_max(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        return attack(
            model,
            x,
            cross_entropy_attack_loss(y),
            geometry=self._geometry,
            epsilon=float("inf"),  # no projection: see UniformNoiseLinf
            step_size=self.step_size,
            steps=1,
            random_start=True,
            generator=generator,
        )
