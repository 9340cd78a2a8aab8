"""The selection phase: one selector for every place shards are computed.

A selection times itself, selects from labels alone when the method's registry entry needs no
embeddings, has every shard attacked and embedded (:mod:`.shards`), merges the results into one
coreset (:mod:`.merge`) and records the total time. Only where the shards are computed differs,
and that is the strategy's one job: this process (:class:`LocalShards`), Ray embedding actors
(``distributed/actors.py``) or the Ray Train ranks (``distributed/rank_shards.py``). A shard's
result does not depend on who computes it, so every strategy gives the same coreset.
"""

from __future__ import annotations

import time
from typing import Protocol

import torch

from ..config import JobConfig
from ..data import ImageSet, Splits
from ..methods import get_method
from ..progress import progress
from .build import make_objective
from .checkpoint import unwrap
from .job import Selection
from .merge import merge_and_choose, merge_mode, merge_shards, shard_result
from .shards import ShardEmbeddings, placeholder_shards, shard_bounds


class ShardStrategy(Protocol):
    """Computes the shard results of one selection."""

    merges: bool  # this process merges (and returns the selection); False: a DDP rank other than 0

    def compute(self, model: torch.nn.Module, epoch: int, bounds: list[tuple[int, int]],
                mode: str) -> list[ShardEmbeddings] | None:
        """Every shard's :func:`.merge.shard_result` for ``mode``, in any order, where this process
        merges; None elsewhere. ``model`` is unwrapped (no DDP wrapper)."""
        ...


class ShardSelector:
    """``selector(model, epoch) -> Selection`` (None on a process that does not merge)."""

    def __init__(self, cfg: JobConfig, train: ImageSet, strategy: ShardStrategy):
        self.cfg, self.train, self.strategy = cfg, train, strategy
        self.bounds = shard_bounds(len(train), cfg.selection.num_shards)
        self.needs_embeddings = get_method(cfg.coreset.method).needs_embeddings

    def __call__(self, model: torch.nn.Module, epoch: int) -> Selection | None:
        t0 = time.perf_counter()
        if not self.needs_embeddings:  # from labels, in the merging process alone: no attack
            if not self.strategy.merges:
                return None
            selection = merge_and_choose(self.cfg, placeholder_shards(self.train, self.bounds), epoch)
        else:
            bare = unwrap(model)
            mode = merge_mode(self.cfg, self.train.labels, bare)
            shards = self.strategy.compute(bare, epoch, self.bounds, mode)
            if shards is None:
                return None
            selection = merge_shards(self.cfg, shards, epoch, mode, self.train.labels)
        selection.timings["total"] = time.perf_counter() - t0
        return selection


class LocalShards:
    """Every shard in this process, one after another (``ray.num_actors: 0``)."""

    merges = True

    def __init__(self, cfg: JobConfig, train: ImageSet, device: torch.device):
        self.cfg, self.train, self.device = cfg, train, device
        self.objective = make_objective(cfg.objective, steps=cfg.coreset.selection_steps)

    def compute(self, model, epoch, bounds, mode):
        return [shard_result(self.cfg, model, self.train, i, b, epoch, self.device, self.objective, mode)
                for i, b in progress(list(enumerate(bounds)), desc=f"selection epoch {epoch}")]


def local_selector(cfg: JobConfig, splits: Splits, device: torch.device) -> ShardSelector:
    """A selector that computes every shard in this process."""
    return ShardSelector(cfg, splits.train, LocalShards(cfg, splits.train, device))
