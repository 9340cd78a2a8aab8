"""Shards of a selection: fixed index ranges, each attacked and embedded on its own.

The training set is cut into ``selection.num_shards`` contiguous shards by position. A shard's
randomness (augmentation and attack start) is seeded by ``(seed, epoch, shard)``, and
embeddings are taken in eval mode, so a shard's embeddings are the same whichever process
computes them (this one, an embedding actor or a Ray Train rank): all call :func:`embed_shard`
and give the same coreset.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from ..config import JobConfig
from ..data import ImageSet, iterate_batches
from ..embeddings import embed_batch
from .build import make_augment, make_objective
from .checkpoint import unwrap
from .runtime import generator


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
