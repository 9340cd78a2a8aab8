"""Which kind of epoch each epoch is: the adversarial-coreset schedule.

``coreset.warmup_epochs`` full-data epochs, then a selection every ``coreset.every`` epochs;
the epochs in between train on the current subset; optionally the last ``final_full_epochs``
train on all data again. Every epoch trains: a selection epoch selects first and then trains
on the new subset (the reference spends such epochs idle).
"""

from __future__ import annotations

from typing import Literal

from ..config import CoresetConfig
from ..methods import get_method

Phase = Literal["full", "select", "subset"]


def epoch_phase(epoch: int, cfg: CoresetConfig, epochs: int | None = None) -> Phase:
    """Phase of 0-based ``epoch`` of ``epochs``: ``full`` data, ``select`` then train, or
    ``subset``. The last ``final_full_epochs`` of ``epochs`` train on all data (InfoBatch's anneal)."""
    if get_method(cfg.method).trains_on_all or epoch < cfg.warmup_epochs:
        return "full"
    if epochs is not None and epoch >= epochs - cfg.final_full_epochs:
        return "full"
    return "select" if (epoch - cfg.warmup_epochs) % cfg.every == 0 else "subset"


def selection_epochs(epochs: int, cfg: CoresetConfig) -> list[int]:
    return [e for e in range(epochs) if epoch_phase(e, cfg, epochs) == "select"]


def warmup_epochs(cfg: CoresetConfig) -> int:
    """Full-data epochs before the first selection (none for a method that always trains on all)."""
    return 0 if get_method(cfg.method).trains_on_all else cfg.warmup_epochs
