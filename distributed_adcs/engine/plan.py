"""Which kind of epoch each epoch is: the adversarial-coreset schedule.

``coreset.warmup_epochs`` full-data epochs, then a selection every ``coreset.every`` epochs;
the epochs in between train on the current subset. Every epoch trains: a selection epoch
selects first and then trains on the new subset (the reference spends such epochs idle).
"""

from __future__ import annotations

from typing import Literal

from ..config import CoresetConfig
from ..methods import get_method

Phase = Literal["full", "select", "subset"]


def epoch_phase(epoch: int, cfg: CoresetConfig) -> Phase:
    """Phase of 0-based ``epoch``: ``full`` data, ``select`` then train, or ``subset``."""
    if get_method(cfg.method).trains_on_all or epoch < cfg.warmup_epochs:
        return "full"
    return "select" if (epoch - cfg.warmup_epochs) % cfg.every == 0 else "subset"


def selection_epochs(epochs: int, cfg: CoresetConfig) -> list[int]:
    return [e for e in range(epochs) if epoch_phase(e, cfg) == "select"]


def warmup_epochs(cfg: CoresetConfig) -> int:
    """Full-data epochs before the first selection (none for a method that always trains on all)."""
    return 0 if get_method(cfg.method).trains_on_all else cfg.warmup_epochs
