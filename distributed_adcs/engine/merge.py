"""Merging shard results into one global coreset, wherever the shards were computed.

``exact``: every shard sends all its embeddings; the merging process runs one greedy over all
of them (the same selection as a single shard). ``two_round`` (GreeDi: Mirzasoleiman et al.,
"Distributed Submodular Maximization", NeurIPS 2013) is for when the embeddings do not fit
there: each shard greedily selects, per class, as many candidates as the global class budget
``k_c`` (capped by the shard's class size), then the merge selects ``k_c`` per class from the
union of the candidates. For a monotone submodular objective such as facility location the
result is within a factor ``(1 - 1/e)^2 / min(m, k)`` of the optimum (m shards); with one
shard it *is* the plain greedy (the second round keeps every candidate).

Weights survive both rounds: a round-1 candidate carries the number of its shard's examples
it represents. CRAIG's second round gives each final element the sum of the weights of the
candidates closest to it; GradMatch's second round matches the weighted candidate gradients
and multiplies the coefficients by the round-1 weights.

No Ray here: an in-process job, the embedding actors and the Ray Train ranks all merge with
this module, so ``selection.merge`` and ``selection.merge_memory_gb`` mean the same on each.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..config import JobConfig
from ..console import say
from ..coreset import Coreset, class_budgets, select, select_batches
from ..embeddings import embedding_dim
from ..methods import get_method
from .job import Selection
from .runtime import budget_and_seed
from .shards import ShardEmbeddings, embed_shard


def choose(cfg: JobConfig, embeddings: torch.Tensor, labels: torch.Tensor, epoch: int) -> Coreset:
    """Run the configured selector with the budget of :func:`budget_and_seed`."""
    c = cfg.coreset
    budget, seed = budget_and_seed(cfg, labels.numel(), epoch)
    if c.per_batch:
        return select_batches(c.method, embeddings, labels, budget, batch_size=cfg.data.batch_size,
                              per_class=c.per_class, seed=seed)
    return select(c.method, embeddings, labels, budget, per_class=c.per_class, seed=seed)


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
    weights = [s.weights for s in shards if s.weights is not None]
    return MergedShards(
        positions=torch.cat([s.positions for s in shards]),
        labels=torch.cat([s.labels for s in shards]),
        embeddings=torch.cat([s.embeddings for s in shards]),
        shard_of=torch.cat([torch.full((s.positions.numel(),), s.shard, dtype=torch.int64) for s in shards]),
        weights=None if len(weights) < len(shards) else torch.cat(weights).float(),  # all or none
        timings={k: sum(s.timings.get(k, 0.0) for s in shards) for k in ("attack", "embed", "local_greedy")})


def merge_and_choose(cfg: JobConfig, shards: list[ShardEmbeddings], epoch: int) -> Selection:
    """The exact merge: concatenate shard embeddings in shard order and select one global coreset."""
    m = concat_shards(shards)
    t0 = time.perf_counter()
    coreset = choose(cfg, m.embeddings, m.labels, epoch)
    timings = {"attack": m.timings["attack"], "embed": m.timings["embed"], "greedy": time.perf_counter() - t0}
    return Selection(epoch, m.positions[coreset.indices], coreset.weights.float(), timings,
                     {"shard": m.shard_of[coreset.indices]})


def merge_bytes(cfg: JobConfig, labels: torch.Tensor, dims: int, mode: str) -> int:
    """Peak bytes the merging process allocates to merge one selection in ``mode``: the gathered
    embeddings plus the largest group's greedy, as the method's registry entry counts it."""
    spec, s = get_method(cfg.coreset.method), cfg.selection
    budgets = _budgets(cfg, labels)
    sizes = {c: (labels.numel() if c == -1 else int((labels == c).sum())) for c in budgets}
    if mode == "two_round":  # the union of the shards' candidates, per group
        share = sizes if s.num_shards == 1 else {
            c: min(sizes[c], s.num_shards + math.ceil(s.greedi_oversample * budgets[c])) for c in sizes}
        sizes = share
    gathered = 4 * dims * sum(sizes.values())
    return gathered + max(spec.selection_bytes(sizes[c], min(budgets[c], sizes[c]), dims) - 4 * dims * sizes[c]
                          for c in sizes)


def merge_mode(cfg: JobConfig, labels: torch.Tensor, model: torch.nn.Module) -> str:
    """``exact`` or ``two_round``. ``auto`` is ``exact`` while that fits ``selection.merge_memory_gb``
    in the merging process (embeddings and the greedy's own matrices, :func:`merge_bytes`), and
    always for a method whose registry entry has no second round."""
    s = cfg.selection
    if s.merge != "auto":
        return s.merge
    if cfg.coreset.per_batch or not get_method(cfg.coreset.method).has_two_round_merge:
        return "exact"
    head = model.head
    assert isinstance(head, torch.nn.Linear)  # every model's last layer (models/base.py)
    dims = embedding_dim(cfg.coreset.embedding, head.out_features, head.in_features)
    budget = s.merge_memory_gb * 2**30
    if merge_bytes(cfg, labels, dims, "exact") <= budget:
        return "exact"
    need = merge_bytes(cfg, labels, dims, "two_round")
    if need > budget:
        say(f"warning: the two-round merge needs about {need / 2**30:.1f} GiB where it merges, over "
            f"selection.merge_memory_gb={s.merge_memory_gb} (lower coreset.fraction or "
            f"selection.greedi_oversample, or raise the budget)", err=True)
    return "two_round"


def candidate_count(k: int, shard_size: int, group_size: int, num_shards: int, oversample: float) -> int:
    """Round-one candidates one shard keeps for a group (a class) of ``group_size`` examples, of
    which it holds ``shard_size``, with a global budget ``k``: ``oversample`` times its share of
    ``k``. With one shard that is ``k`` (the plain greedy). GreeDi's k per shard (oversample >=
    num_shards) keeps every example once k >= group/shards, which at fraction 0.3 and 4 shards
    made the union the whole set: the second round then reduced nothing."""
    if num_shards == 1:
        return min(k, shard_size)
    return min(shard_size, max(1, math.ceil(oversample * k * shard_size / max(group_size, 1))))


def _budgets(cfg: JobConfig, all_labels: torch.Tensor) -> dict[int, int]:
    budget, _ = budget_and_seed(cfg, all_labels.numel(), epoch=0)  # the budget is the same every epoch
    if cfg.coreset.per_class:
        return {int(c): int(k) for c, k in class_budgets(all_labels, budget).items()}
    return {-1: budget}


def _groups(labels: torch.Tensor, budgets: dict[int, int]):
    for c, k in budgets.items():
        members = torch.arange(labels.numel()) if c == -1 else (labels == c).nonzero().flatten()
        if members.numel() and k > 0:
            yield c, members, k


def local_candidates(cfg: JobConfig, shard: ShardEmbeddings, epoch: int,
                     all_labels: torch.Tensor) -> ShardEmbeddings:
    """Round one on a shard: :func:`candidate_count` candidates per class, with their local weights."""
    keep, weights = [], []
    _, seed = budget_and_seed(cfg, all_labels.numel(), epoch)
    for c, members, k in _groups(shard.labels, _budgets(cfg, all_labels)):
        group = all_labels.numel() if c == -1 else int((all_labels == c).sum())
        count = candidate_count(k, members.numel(), group, cfg.selection.num_shards, cfg.selection.greedi_oversample)
        core = select(cfg.coreset.method, shard.embeddings[members], shard.labels[members],
                      count, per_class=False, seed=seed)
        keep.append(members[core.indices])
        weights.append(core.weights.float())
    keep_t = torch.cat(keep)
    return ShardEmbeddings(shard.shard, shard.positions[keep_t], shard.labels[keep_t], shard.embeddings[keep_t],
                           dict(shard.timings), torch.cat(weights))


def two_round_merge(cfg: JobConfig, shards: list[ShardEmbeddings], epoch: int,
                    all_labels: torch.Tensor) -> Selection:
    """Round two, in the merging process, over the union of the shards' candidates.

    Args:
        all_labels: labels of the whole training set (the global per-class budgets).
    """
    t0 = time.perf_counter()
    m = concat_shards(shards)
    second = get_method(cfg.coreset.method).second_round_fn()
    _, seed = budget_and_seed(cfg, all_labels.numel(), epoch)
    keep, weights = [], []
    assert m.weights is not None  # round one gave every candidate its local weight
    for _, members, k in _groups(m.labels, _budgets(cfg, all_labels)):
        idx, wk = second(m.embeddings[members], m.weights[members], min(k, members.numel()), seed)
        keep.append(members[idx])
        weights.append(wk)
    keep_t = torch.cat(keep)
    timings = {"attack": m.timings["attack"], "embed": m.timings["embed"],
               "greedy": m.timings["local_greedy"] + time.perf_counter() - t0}
    return Selection(epoch, m.positions[keep_t], torch.cat(weights), timings, {"shard": m.shard_of[keep_t]})


def shard_result(cfg: JobConfig, model: torch.nn.Module, train, shard: int, bounds: tuple[int, int], epoch: int,
                 device: torch.device, objective, mode: str) -> ShardEmbeddings:
    """What one shard sends to the merge: all its embeddings (``exact``), or its round-one
    candidates with their local weights (``two_round``)."""
    result = embed_shard(model, cfg, train, shard, bounds, epoch, device, objective)
    if mode == "two_round":
        t0 = time.perf_counter()
        result = local_candidates(cfg, result, epoch, train.labels)
        result.timings["local_greedy"] = time.perf_counter() - t0
    return result


def merge_shards(cfg: JobConfig, shards: list[ShardEmbeddings], epoch: int, mode: str,
                 all_labels: torch.Tensor) -> Selection:
    """One global coreset from the shards' results (``mode`` as :func:`merge_mode` chose)."""
    t0 = time.perf_counter()
    if mode == "two_round":
        selection = two_round_merge(cfg, shards, epoch, all_labels)
    else:
        selection = merge_and_choose(cfg, shards, epoch)
    selection.timings["merge"] = time.perf_counter() - t0
    return selection
