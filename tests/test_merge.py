"""The two-round (GreeDi) merge, without Ray: exact with one shard, within its bound with many."""

from __future__ import annotations

import math

import pytest
import torch

from distributed_adcs.config import load_config
from distributed_adcs.coreset import facility_location_value, select
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


def _class_residual(emb, labels, positions, weights):
    """Relative distance of the weighted subset's per-class gradient sums from the full ones."""
    total = 0.0
    for c in labels.unique():
        mine = labels[positions] == c
        full = emb[labels == c].double().sum(0)
        approx = weights[mine].double() @ emb[positions[mine]].double()
        total += float((full - approx).norm() / full.norm())
    return total / labels.unique().numel()


@pytest.mark.parametrize("shards", [1, 2, 4, 8])
def test_gradmatch_two_round_is_exact_for_one_shard_and_matches_gradients(shards):
    g = torch.Generator().manual_seed(5)
    n, frac = 800, 0.1
    labels = torch.randint(0, 4, (n,), generator=g)
    emb = torch.randn(n, 10, generator=g) * 0.7 + torch.randn(4, 10, generator=g)[labels]  # a mean per class
    cfg = load_config(None, ["coreset.method=gradmatch", f"coreset.fraction={frac}", "train.epochs=3",
                             "coreset.warmup_epochs=1"])
    exact = merge_and_choose(cfg, _shards(emb, labels, shards), epoch=1)
    merged = two_round_merge(cfg, [local_candidates(cfg, s, 1, labels) for s in _shards(emb, labels, shards)],
                             1, labels)
    assert merged.positions.numel() == exact.positions.numel() == round(frac * n)
    assert len(set(merged.positions.tolist())) == merged.positions.numel()
    for c in range(4):
        assert (labels[merged.positions] == c).sum() == (labels[exact.positions] == c).sum()
    if shards == 1:  # the second round keeps every candidate with its round-one weight
        order_e, order_m = exact.positions.argsort(), merged.positions.argsort()
        assert torch.equal(exact.positions[order_e], merged.positions[order_m])
        torch.testing.assert_close(exact.weights[order_e], merged.weights[order_m])
        return
    ours = _class_residual(emb, labels, merged.positions, merged.weights)
    randoms = []
    for seed in range(10):
        rnd = select("random", emb, labels, round(frac * n), seed=seed)
        randoms.append(_class_residual(emb, labels, rnd.indices, rnd.weights))
    assert ours < min(randoms)  # the weighted merge still matches the gradients better than chance
    assert ours < 2 * _class_residual(emb, labels, exact.positions, exact.weights) + 0.05
