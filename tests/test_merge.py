"""The two-round (GreeDi) merge, without Ray: exact with one shard, within its bound with many."""

from __future__ import annotations

import math

import pytest
import torch

from distributed_adcs.config import load_config
from distributed_adcs.coreset import facility_location_value
from distributed_adcs.distributed.merge import local_candidates, two_round_merge
from distributed_adcs.engine.selection import ShardEmbeddings, merge_and_choose, shard_bounds


def _shards(emb, labels, m):
    return [ShardEmbeddings(i, torch.arange(a, b), labels[a:b], emb[a:b], {}) for i, (a, b) in
            enumerate(shard_bounds(labels.numel(), m))]


def _value(emb, labels, positions):
    chosen = torch.zeros(labels.numel(), dtype=torch.bool)
    chosen[positions] = True
    total = 0.0
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        total += facility_location_value(emb[members], chosen[members].nonzero().flatten())
    return total


@pytest.mark.parametrize("shards", [1, 2, 4, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_round_is_exact_for_one_shard_and_within_bound_otherwise(shards, seed):
    g = torch.Generator().manual_seed(seed)
    n, k_frac = 600, 0.1
    centers = torch.randn(12, 8, generator=g) * 4
    emb = centers[torch.randint(0, 12, (n,), generator=g)] + torch.randn(n, 8, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    cfg = load_config(None, ["coreset.method=craig", f"coreset.fraction={k_frac}", "train.epochs=3",
                             "coreset.warmup_epochs=1"])
    exact = merge_and_choose(cfg, _shards(emb, labels, shards), epoch=1)
    cands = [local_candidates(cfg, s, 1, labels) for s in _shards(emb, labels, shards)]
    merged = two_round_merge(cfg, cands, 1, labels)
    assert merged.positions.numel() == exact.positions.numel() == round(k_frac * n)
    for c in range(3):  # per-class budgets preserved
        assert (labels[merged.positions] == c).sum() == (labels[exact.positions] == c).sum()
    assert merged.weights.sum().item() == pytest.approx(n)  # every example is represented once
    if shards == 1:
        assert torch.equal(merged.positions.sort().values, exact.positions.sort().values)
        return
    k = exact.positions.numel()
    bound = (1 - 1 / math.e) ** 2 / min(shards, k)  # GreeDi's worst case, relative to the optimum
    ratio = _value(emb, labels, merged.positions) / _value(emb, labels, exact.positions)
    assert ratio >= bound
    assert ratio > 0.9  # in practice far better than the worst case on clustered data
