"""Selection sharded over the Ray Train (DDP) ranks: the shard strategy of a Ray Train job.

Rank ``r`` attacks and embeds shards ``r, r + W, ...``; rank 0 gathers every rank's results and
merges them (:class:`~distributed_adcs.engine.selection.ShardSelector`), and the ``Job`` shares
its selection with the other ranks. The workers hold the job's CPUs and GPUs anyway and would
otherwise sit idle while a selection runs. Shard randomness depends on the shard, never on the
rank, so 1 and 2 workers select the same coreset.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ..config import JobConfig
from ..data import ImageSet
from ..engine.build import make_objective
from ..engine.merge import shard_result
from ..engine.selection import ShardSelector
from ..engine.shards import ShardEmbeddings
from ..progress import progress


class RankShards:
    """This rank's shards; rank 0 gathers all of them (``dist.gather_object``) and merges."""

    def __init__(self, cfg: JobConfig, train: ImageSet, device: torch.device, rank: int, world_size: int):
        self.cfg, self.train, self.device = cfg, train, device
        self.rank, self.world_size = rank, world_size
        self.merges = rank == 0
        self.objective = make_objective(cfg.objective, steps=cfg.coreset.selection_steps)

    def compute(self, model: torch.nn.Module, epoch: int, bounds: list[tuple[int, int]],
                mode: str) -> list[ShardEmbeddings] | None:
        mine = [(i, b) for i, b in enumerate(bounds) if i % self.world_size == self.rank]
        results = [shard_result(self.cfg, model, self.train, i, b, epoch, self.device, self.objective, mode)
                   for i, b in progress(mine, desc=f"selection epoch {epoch}")]
        if self.world_size == 1:
            return results
        # rank 0's box: gather_object fills it with every rank's list of results
        box: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(results, box, dst=0)
        return [r for part in box for r in part] if box is not None else None


def rank_shard_selector(cfg: JobConfig, splits, device: torch.device, rank: int, world_size: int) -> ShardSelector:
    """The selector every rank calls at a selection epoch: the selection on rank 0, None elsewhere
    (a method without embeddings selects from labels on rank 0 alone)."""
    return ShardSelector(cfg, splits.train, RankShards(cfg, splits.train, device, rank, world_size))
