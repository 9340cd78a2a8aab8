"""The selection phase in this process: attack, embed and select, over fixed index-range shards
(:mod:`.shards`), merged by :mod:`.merge`."""

from __future__ import annotations

import time

import torch

from ..config import JobConfig
from ..data import Splits
from ..methods import get_method
from ..progress import progress
from .build import make_objective
from .checkpoint import unwrap
from .job import Selection
from .merge import merge_and_choose, merge_mode, merge_shards, shard_result
from .shards import placeholder_shards, shard_bounds


def local_selector(cfg: JobConfig, splits: Splits, device: torch.device):
    """A selector that runs every shard in this process (``ray.num_actors: 0``)."""
    train = splits.train
    bounds = shard_bounds(len(train), cfg.selection.num_shards)
    objective = make_objective(cfg.objective, steps=cfg.coreset.selection_steps)

    def run(model: torch.nn.Module, epoch: int) -> Selection:
        t0 = time.perf_counter()
        if not get_method(cfg.coreset.method).needs_embeddings:
            selection = merge_and_choose(cfg, placeholder_shards(train, bounds), epoch)
        else:
            mode = merge_mode(cfg, train.labels, unwrap(model))
            shards = [shard_result(cfg, model, train, i, b, epoch, device, objective, mode)
                      for i, b in progress(list(enumerate(bounds)), desc=f"selection epoch {epoch}")]
            selection = merge_shards(cfg, shards, epoch, mode, train.labels)
        selection.timings["total"] = time.perf_counter() - t0
        return selection

    return run
