"""``build_objective``: the job's objective from its config, through the objective registry.

The registry itself (``OBJECTIVES``, one :class:`~distributed_adcs.specs.objectives.ObjectiveSpec`
per name, and what a new entry must provide) lives in ``distributed_adcs/specs/objectives.py``,
where the config reads it without importing torch.
"""

from __future__ import annotations

from distributed_adcs.config import ObjectiveConfig
from distributed_adcs.objectives.base import Objective
from distributed_adcs.specs.objectives import OBJECTIVES, get_objective

__all__ = ["OBJECTIVES", "build_objective"]


def build_objective(spec: ObjectiveConfig) -> Objective:
    """Instantiates the objective named by ``spec.name``.

    Args:
        spec: objective settings; ``spec.params`` holds the entry's own parameters.

    Returns:
        The configured objective.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    return get_objective(spec.name).build_fn()(spec)
