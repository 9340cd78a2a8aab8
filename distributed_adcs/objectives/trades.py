"""TRADES (Zhang et al., 2019): clean CE plus beta times KL(clean || adversarial)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distributed_adcs.attacks import GaussianStartLinfGeometry, attack
from distributed_adcs.config import ObjectiveConfig
from distributed_adcs.objectives.base import Objective, cross_entropy_logit_grad

# TRADES starts its inner maximisation at x + 0.001 * N(0, 1): at x itself the
# KL and its gradient are exactly zero, so PGD would never move.
_TRADES_START = GaussianStartLinfGeometry(sigma=0.001)


def _kl_clean_adv(log_p_clean: Tensor, log_p_adv: Tensor) -> Tensor:
    """Per-example KL(p_clean || p_adv) = sum_k p_c,k (log p_c,k - log p_a,k).

    Same value as ``F.kl_div(log_p_adv, p_clean, reduction="none").sum(1)``
    (torch's kl_div semantics, summed over classes), computed from log
    probabilities for stability.
    """
    return F.kl_div(log_p_adv, log_p_clean, reduction="none", log_target=True).sum(dim=1)


class Trades(Objective):
    """TRADES: ``CE(f(x), y) + beta * KL(p(x) || p(x_adv))`` per example (beta, not beta^2).

    Inner maximisation: l-inf PGD on the KL from a Gaussian start
    (``spec.random_start`` is ignored). Clean probabilities for the attack
    are computed once, without gradient, in the attack's BN mode.
    ``spec.params`` is a ``TradesParams`` (``beta``).
    """

    needs_clean_logits = True

    def __init__(self, spec: ObjectiveConfig) -> None:
        super().__init__(spec)
        if self.norm != "linf":  # the Gaussian start below wraps the l-inf ball only
            raise ValueError(f"TRADES attacks in the l-inf ball; its registry entry says {self.norm}")

    def _inner_max(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        with torch.no_grad():
            log_p_clean = F.log_softmax(model(x), dim=1)

        def kl_loss(logits_adv: Tensor, _x_adv: Tensor) -> Tensor:
            return _kl_clean_adv(log_p_clean, F.log_softmax(logits_adv, dim=1))

        return attack(
            model,
            x,
            kl_loss,
            geometry=_TRADES_START,
            epsilon=self.spec.epsilon,
            step_size=self.step_size,
            steps=self.spec.steps,
            random_start=True,
            generator=generator,
        )

    def loss_from_logits(self, logits_clean: Tensor | None, logits_adv: Tensor, y: Tensor) -> Tensor:
        """Per-example ``CE(logits_clean, y) + beta * KL(p_clean || p_adv)``.

        Raises:
            ValueError: without clean logits.
        """
        if logits_clean is None:
            raise ValueError("TRADES needs the clean logits")
        ce = F.cross_entropy(logits_clean, y, reduction="none")
        kl = _kl_clean_adv(F.log_softmax(logits_clean, dim=1), F.log_softmax(logits_adv, dim=1))
        return ce + self.spec.params.beta * kl

    def logit_grads(
        self, logits_clean: Tensor | None, logits_adv: Tensor, y: Tensor
    ) -> tuple[Tensor | None, Tensor]:
        """Closed-form derivatives of the TRADES loss.

        With p_c, p_a the clean/adversarial softmaxes and KL the per-example
        divergence:
        clean path ``(p_c - onehot) + beta * p_c * ((log p_c - log p_a) - KL)``,
        adversarial path ``beta * (p_a - p_c)``.
        """
        if logits_clean is None:
            raise ValueError("TRADES needs the clean logits")
        log_pc = F.log_softmax(logits_clean.detach(), dim=1)
        log_pa = F.log_softmax(logits_adv.detach(), dim=1)
        p_c, p_a = log_pc.exp(), log_pa.exp()
        kl = _kl_clean_adv(log_pc, log_pa).unsqueeze(1)
        beta = self.spec.params.beta
        grad_clean = cross_entropy_logit_grad(logits_clean, y) + beta * p_c * ((log_pc - log_pa) - kl)
        return grad_clean, beta * (p_a - p_c)
