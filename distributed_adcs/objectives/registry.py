"""Name -> objective class registry and the factory used by the trainer."""

from __future__ import annotations

from distributed_adcs.config import ObjectiveConfig
from distributed_adcs.objectives.base import Objective
from distributed_adcs.objectives.pat import PAT
from distributed_adcs.objectives.pgd import FGSMRS, PGDL2, PGDLinf
from distributed_adcs.objectives.trades import Trades

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (PGDLinf, PGDL2, FGSMRS, Trades, PAT)
}


def build_objective(spec: ObjectiveConfig) -> Objective:
    """Instantiates the objective named by ``spec.name``.

    Args:
        spec: objective settings.

    Returns:
        The configured objective.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if spec.name not in OBJECTIVES:
        raise ValueError(f"unknown objective {spec.name!r}; known: {sorted(OBJECTIVES)}")
    return OBJECTIVES[spec.name](spec)
