"""Adversarial training objectives with per-example losses and closed-form logit gradients."""

from distributed_adcs.objectives.base import (
    Objective,
    cross_entropy_attack_loss,
    cross_entropy_logit_grad,
)
from distributed_adcs.objectives.pat import PAT, PAT_DEFAULT_EPSILON
from distributed_adcs.objectives.pgd import FGSMRS, PGDObjective
from distributed_adcs.objectives.registry import OBJECTIVES, build_objective
from distributed_adcs.objectives.trades import Trades

__all__ = [
    "FGSMRS",
    "OBJECTIVES",
    "PAT",
    "PAT_DEFAULT_EPSILON",
    "Objective",
    "PGDObjective",
    "Trades",
    "build_objective",
    "cross_entropy_attack_loss",
    "cross_entropy_logit_grad",
]
