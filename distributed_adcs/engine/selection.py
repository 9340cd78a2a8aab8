"""The selection phase: attack, embed and select, over fixed index-range shards.

The training set is cut into ``ray.num_shards`` contiguous shards by position. A shard's
randomness (augmentation and attack start) is seeded by ``(seed, epoch, shard)``, and
embeddings are taken in eval mode, so a shard's embeddings are the same whichever process
computes them: this module's in-process selector and the Ray actor pool
(``distributed_adcs.distributed``) both call :func:`embed_shard` and give the same coreset.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from ..config import CoresetConfig, JobConfig
from ..coreset import Coreset, select, select_batches
from ..data import ImageSet, Splits, iterate_batches
from ..embeddings import embed_batch
from ..methods import get_method
from ..progress import progress
from .build import make_augment, make_objective
from .checkpoint import unwrap
from .job import Selection
from .runtime import derive_seed, generator


@dataclass
class ShardEmbeddings:
    shard: int
    positions: torch.Tensor  # int64 positions into the training ImageSet
    labels: torch.Tensor
    embeddings: torch.Tensor  # float32 [n_shard, E], on CPU
    timings: dict[str, float]
    weights: torch.Tensor | None = None  # two-round merge: the shard's local coreset weights


def shard_bounds(n: int, num_shards: int) -> list[tuple[int, int]]:
    """``num_shards`` contiguous ``[start, stop)`` ranges covering ``range(n)`` (sizes differ by <= 1)."""
    num_shards = max(1, min(num_shards, n))
    edges = [round(i * n / num_shards) for i in range(num_shards + 1)]
    return list(zip(edges[:-1], edges[1:]))


@contextmanager
def buffers_kept(model: torch.nn.Module) -> Iterator[None]:
    """Restore every buffer (BatchNorm running statistics) on exit: a selection attack in
    ``objective.bn_mode: train`` updates them, and selection must not change the live model."""
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in zip(model.buffers(), saved):
                buf.copy_(value)


def embed_shard(model: torch.nn.Module, cfg: JobConfig, data: ImageSet, shard: int, bounds: tuple[int, int],
                epoch: int, device: torch.device, objective=None) -> ShardEmbeddings:
    """Selection attack and embeddings for one shard (positions ``bounds[0]..bounds[1]-1``).

    Batches of ``data.eval_batch_size``: embeddings are taken in eval mode, so the batch size
    changes only speed (larger batches use the hardware better), not the result.
    """
    model = unwrap(model)
    objective = objective or make_objective(cfg.objective, steps=cfg.coreset.selection_steps)
    positions = torch.arange(*bounds)
    timings: dict[str, float] = defaultdict(float)
    clock = lambda phase, s: timings.__setitem__(phase, timings[phase] + s)  # noqa: E731
    attack_gen = generator(cfg.seed, "select-attack", epoch, shard, device=device)
    with buffers_kept(model):
        chunks = [embed_batch(model, objective, b.x, b.y, kind=cfg.coreset.embedding, generator=attack_gen,
                              clock=clock).cpu()
                  for b in iterate_batches(data, cfg.data.eval_batch_size, shuffle=False, positions=positions,
                                           augment=make_augment(cfg),
                                           generator=generator(cfg.seed, "select-augment", epoch, shard),
                                           device=device)]
    return ShardEmbeddings(shard, positions, data.labels[positions], torch.cat(chunks), dict(timings))


def placeholder_shards(train: ImageSet, bounds: list[tuple[int, int]]) -> list[ShardEmbeddings]:
    """Shards without embeddings, for methods whose spec needs none (they select from labels)."""
    return [ShardEmbeddings(i, torch.arange(a, b), train.labels[a:b], torch.zeros(b - a, 1), {})
            for i, (a, b) in enumerate(bounds)]


def choose(cfg: CoresetConfig, embeddings: torch.Tensor, labels: torch.Tensor, *, seed: int, epoch: int,
           batch_size: int) -> Coreset:
    """Run the configured selector with a budget of ``round(fraction * n)`` examples."""
    budget = max(1, round(cfg.fraction * labels.numel()))
    seed = derive_seed(seed, "select", epoch) % (2**31)
    if cfg.per_batch:
        return select_batches(cfg.method, embeddings, labels, budget, batch_size=batch_size,
                              per_class=cfg.per_class, seed=seed)
    return select(cfg.method, embeddings, labels, budget, per_class=cfg.per_class, seed=seed)


@dataclass
class MergedShards:
    """Shard results concatenated in shard order (what both merge strategies start from)."""

    positions: torch.Tensor
    labels: torch.Tensor
    embeddings: torch.Tensor
    shard_of: torch.Tensor  # shard id of every row
    weights: torch.Tensor | None  # two-round candidates' local weights
    timings: dict[str, float]  # attack and embed seconds, summed over shards (compute time)


def concat_shards(shards: list[ShardEmbeddings]) -> MergedShards:
    shards = sorted(shards, key=lambda s: s.shard)
    weights = [s.weights for s in shards]
    return MergedShards(
        positions=torch.cat([s.positions for s in shards]),
        labels=torch.cat([s.labels for s in shards]),
        embeddings=torch.cat([s.embeddings for s in shards]),
        shard_of=torch.cat([torch.full((s.positions.numel(),), s.shard, dtype=torch.int64) for s in shards]),
        weights=None if any(w is None for w in weights) else torch.cat(weights).float(),
        timings={k: sum(s.timings.get(k, 0.0) for s in shards) for k in ("attack", "embed", "local_greedy")})


def merge_and_choose(cfg: JobConfig, shards: list[ShardEmbeddings], epoch: int) -> Selection:
    """Concatenate shard embeddings in shard order and select one global coreset."""
    m = concat_shards(shards)
    t0 = time.perf_counter()
    coreset = choose(cfg.coreset, m.embeddings, m.labels, seed=cfg.seed, epoch=epoch, batch_size=cfg.data.batch_size)
    timings = {"attack": m.timings["attack"], "embed": m.timings["embed"], "greedy": time.perf_counter() - t0}
    return Selection(epoch, m.positions[coreset.indices], coreset.weights.float(), timings,
                     {"shard": m.shard_of[coreset.indices]})


def local_selector(cfg: JobConfig, splits: Splits, device: torch.device):
    """A selector that runs every shard in this process (``ray.num_actors: 0``)."""
    train = splits.train
    bounds = shard_bounds(len(train), cfg.selection.num_shards)
    objective = make_objective(cfg.objective, steps=cfg.coreset.selection_steps)

    def run(model: torch.nn.Module, epoch: int) -> Selection:
        t0 = time.perf_counter()
        if not get_method(cfg.coreset.method).needs_embeddings:
            shards = placeholder_shards(train, bounds)
        else:
            shards = [embed_shard(model, cfg, train, i, b, epoch, device, objective)
                      for i, b in progress(list(enumerate(bounds)), desc=f"selection epoch {epoch}")]
        selection = merge_and_choose(cfg, shards, epoch)
        selection.timings["total"] = time.perf_counter() - t0
        return selection

    return run
