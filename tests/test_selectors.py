"""Tests for distributed_adcs.coreset: greedy exactness, quality, budgets, batching."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from distributed_adcs.coreset import (
    METHODS,
    class_budgets,
    facility_location_greedy,
    facility_location_value,
    make_batches,
    naive_facility_location_greedy,
    select,
    select_batches,
)
from distributed_adcs.coreset.budgets import batches_for_budget
from distributed_adcs.coreset.facility import craig, max_pairwise_distance, similarity_offset
from distributed_adcs.coreset.gradmatch import DEFAULT_RIDGE, gradmatch


# the selectors of embeddings or labels (adaptive draws from training records: test_adaptive.py)
GROUP_METHODS = sorted(m for m, spec in METHODS.items() if not spec.needs_records)


def _gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _greedy_inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    dup = torch.randint(0, 3, (240, 2), generator=g).float()  # 9 distinct points, massive ties
    base = torch.randn(60, 4, generator=g)
    twins = torch.cat([base, base, base[:20]])  # exact duplicate rows
    blobs = torch.cat([torch.randn(50, 3, generator=g) * 0.1 + 5 * i for i in range(4)])
    coarse = [torch.randint(0, 6, (200 + 37 * s, 2 + s), generator=g).float() for s in range(3)]
    return [_gaussian(300, 5, 0), _gaussian(400, 16, 1), dup, twins, blobs, *coarse]


@pytest.mark.parametrize("case", range(8))
def test_accelerated_greedy_matches_naive(case: int) -> None:
    x = _greedy_inputs()[case]
    k = min(120, x.shape[0] - 1)
    fast, assign = facility_location_greedy(x, k)
    slow = naive_facility_location_greedy(x, k)
    assert fast.tolist() == slow.tolist()
    assert len(set(fast.tolist())) == k
    assert int(assign.min()) >= 0 and int(assign.max()) < k


def test_greedy_ties_go_to_lowest_index() -> None:
    # Every point identical: all gains tie at every step -> picks 0, 1, 2, ...
    x = torch.ones(12, 3)
    order, assign = facility_location_greedy(x, 4)
    assert order.tolist() == [0, 1, 2, 3]
    assert assign.tolist() == [0] * 12  # ties in coverage go to the earliest pick


def test_greedy_within_one_minus_inv_e_of_brute_force() -> None:
    bound = 1 - 1 / math.e
    vacuous = True
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        n, k = 6 + seed % 5, 1 + seed % 3
        centres = torch.randn(3, 2, generator=g) * 10
        x = centres[torch.randint(0, 3, (n,), generator=g)] + torch.randn(n, 2, generator=g)
        c = similarity_offset(max_pairwise_distance(x))
        values = [facility_location_value(x, torch.tensor(s), c=c)
                  for s in itertools.combinations(range(n), k)]
        greedy, _ = facility_location_greedy(x, k)
        ours = facility_location_value(x, greedy, c=c)
        assert ours >= bound * max(values) - 1e-9
        if k == 1:  # greedy is exactly optimal for a single pick
            assert ours == pytest.approx(max(values), rel=1e-6)
        vacuous = vacuous and min(values) >= bound * max(values)
    assert not vacuous, "some subset should violate the bound, else the check proves nothing"


def _blobs() -> tuple[torch.Tensor, list[int], torch.Tensor]:
    sizes = [12, 25, 40, 8, 30]
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(5, 6, generator=g) * 100
    x = torch.cat([centres[i] + torch.randn(s, 6, generator=g) for i, s in enumerate(sizes)])
    owner = torch.repeat_interleave(torch.arange(5), torch.tensor(sizes))
    return x, sizes, owner


def test_craig_picks_one_per_cluster_weighted_by_size() -> None:
    x, sizes, owner = _blobs()
    labels = torch.zeros(x.shape[0], dtype=torch.int64)
    core = select("craig", x, labels, 5)
    clusters = owner[core.indices]
    assert sorted(clusters.tolist()) == [0, 1, 2, 3, 4]
    by_cluster = {int(c): float(w) for c, w in zip(clusters, core.weights)}
    assert by_cluster == {i: float(s) for i, s in enumerate(sizes)}
    # A uniform subset of the same size rarely hits every cluster (p ~ 2%),
    # and its weights (n / k each) never equal the cluster sizes.
    hits = exact = 0
    for seed in range(200):
        rnd = select("random", x, labels, 5, seed=seed)
        one_each = sorted(owner[rnd.indices].tolist()) == [0, 1, 2, 3, 4]
        hits += one_each
        exact += one_each and sorted(rnd.weights.tolist()) == sorted(map(float, sizes))
    assert hits / 200 < 0.1
    assert exact == 0


def _residual(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> float:
    xd = x.double()
    return float((xd.sum(0) - w.double() @ xd[idx]).norm())


def test_gradmatch_residual_monotone_and_beats_random() -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(200, 32, generator=g) * 0.5 + torch.randn(32, generator=g)
    target = float(x.double().sum(0).norm())
    threads = torch.get_num_threads()
    previous = math.inf
    for k in range(1, 31):
        idx, w = gradmatch(x, k, generator=torch.Generator().manual_seed(0))
        assert idx.numel() == k and len(set(idx.tolist())) == k and bool((w > 0).all())
        r = _residual(x, idx, w)
        assert r <= previous + 1e-6 * target, f"residual grew at budget {k}"
        previous = r
        best_random = min(
            _residual(x, *METHODS["random"].select_fn()(x, k, generator=torch.Generator().manual_seed(s)))
            for s in range(20)
        )
        assert r < best_random, f"budget {k}: gradmatch {r:.3g} vs best random {best_random:.3g}"
    assert previous < 1e-3 * target
    assert torch.get_num_threads() == threads  # the single-thread scope is restored


def test_gradmatch_default_ridge_spreads_weight_unbiased_and_scale_free() -> None:
    # d = 3 < budget = 10. Without a ridge the pursuit matches b exactly with d rows and stops;
    # the default ridge keeps picking (weight spread over the whole budget) at a bias of
    # about ridge relative to ||b||, and it is scale-free (lam follows the gradients' norms).
    from distributed_adcs.coreset.gradmatch import matching_pursuit

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=g) + torch.tensor([1.0, 0.5, 0.2])
    b = x.double().sum(0)
    support, w = matching_pursuit(x, 10, ridge=DEFAULT_RIDGE)
    assert support.numel() == 10 and bool((w > 0).all())
    assert float((b - w.double() @ x.double()[support]).norm() / b.norm()) < 1e-5
    assert matching_pursuit(x, 10, ridge=0.0)[0].numel() == 3
    idx, weights = gradmatch(x, 10, generator=torch.Generator().manual_seed(0))
    idx_big, weights_big = gradmatch(x * 1000, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx, idx_big)
    torch.testing.assert_close(weights, weights_big, rtol=1e-5, atol=1e-6)


def test_gradmatch_shortfall_fill_is_exact_and_seeded() -> None:
    # Three large gradients along +v, twenty small ones along -v: once the +v
    # rows are in, nothing correlates positively with the residual, so the
    # pursuit stops at 3 and the other 5 rows are a seeded random fill, weight 1.
    v = torch.tensor([1.0, 2.0, 3.0])
    x = torch.cat([v * torch.tensor([[9.0], [10.0], [11.0]]), -0.5 * v.expand(20, 3)])
    idx, w = gradmatch(x, 8, generator=torch.Generator().manual_seed(0))
    assert idx.numel() == 8 and len(set(idx.tolist())) == 8
    assert sorted(idx[:3].tolist()) == [0, 1, 2] and bool((w[:3] > 0).all())
    assert bool((idx[3:] >= 3).all()) and torch.equal(w[3:], torch.ones(5))
    again, _ = gradmatch(x, 8, generator=torch.Generator().manual_seed(0))
    other, _ = gradmatch(x, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(idx, again) and not torch.equal(idx, other)


def test_class_budgets_exact_and_proportional() -> None:
    sizes = [1, 2, 3, 7, 11, 13]
    labels = torch.repeat_interleave(torch.tensor([5, 0, 9, 2, 4, 7]), torch.tensor(sizes))
    total = sum(sizes)
    for budget in list(range(1, total + 1)) + [total + 10]:
        shares = class_budgets(labels, budget)
        assert list(shares) == sorted(shares)
        assert sum(shares.values()) == min(budget, total)
        for cls, size in zip([5, 0, 9, 2, 4, 7], sizes):
            assert 0 <= shares[cls] <= size
            assert abs(shares[cls] - min(budget, total) * size / total) < 1


@pytest.mark.parametrize("method", GROUP_METHODS)
def test_select_budgets_weights_and_full_budget(method: str) -> None:
    sizes = [3, 7, 11, 13]
    shuffle = torch.randperm(34, generator=torch.Generator().manual_seed(0))
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))[shuffle]
    x = _gaussian(34, 4, 2) + labels[:, None].float()
    for budget in (1, 5, 9, 17, 33):
        core = select(method, x, labels, budget, seed=budget)
        expected = 34 if METHODS[method].trains_on_all else min(budget, 34)
        assert len(core) == expected and len(set(core.indices.tolist())) == expected
        assert torch.equal(core.indices, torch.sort(core.indices).values)
        if not METHODS[method].trains_on_all:
            counts = torch.bincount(labels[core.indices], minlength=4).tolist()
            assert counts == list(class_budgets(labels, budget).values())
        if method in ("craig", "random"):  # weights cover each selected class exactly
            per_class = torch.zeros(4).index_add_(0, labels[core.indices], core.weights)
            shares = torch.tensor(list(class_budgets(labels, budget).values()))
            covered = torch.where(shares > 0, torch.tensor(sizes), 0).float()
            assert torch.allclose(per_class, covered)
        flat = select(method, x, labels, budget, per_class=False, seed=1)
        assert len(flat) == expected
    for budget in (34, 50):
        core = select(method, x, labels, budget)
        assert core.indices.tolist() == list(range(34))
        assert torch.equal(core.weights, torch.ones(34))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4", None])
def test_invalid_budget_raises(bad: object) -> None:
    x, labels = _gaussian(10, 2, 0), torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ValueError, match="budget"):
        select("random", x, labels, bad)  # type: ignore[arg-type]


def test_invalid_inputs_raise() -> None:
    x, labels = _gaussian(10, 2, 0), torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ValueError, match="2-D"):
        select("craig", x[:, 0], labels, 3)
    with pytest.raises(ValueError, match="floating"):
        select("craig", x.long(), labels, 3)
    with pytest.raises(ValueError, match="integer"):
        select("craig", x, labels.float(), 3)
    with pytest.raises(ValueError, match="entries"):
        select("craig", x, labels[:5], 3)
    with pytest.raises(ValueError, match="NaN"):
        select("craig", torch.full((10, 2), float("nan")), labels, 3)


def test_unknown_method_lists_valid_names() -> None:
    x, labels = _gaussian(10, 2, 0), torch.zeros(10, dtype=torch.int64)
    for call in (lambda: select("kmeans", x, labels, 3),
                 lambda: select_batches("kmeans", x, labels, 3, batch_size=2)):
        with pytest.raises(ValueError) as err:
            call()
        assert all(name in str(err.value) for name in METHODS)
    with pytest.raises(ValueError, match="selects from training records"):
        select("adaptive", x, labels, 3)


@pytest.mark.parametrize("method", GROUP_METHODS)
def test_select_batches_expands_whole_batches(method: str) -> None:
    sizes, batch_size = [9, 17, 22], 4
    labels = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    x = _gaussian(48, 3, 5) + 3 * labels[:, None].float()
    budget, seed = 20, 4
    core = select_batches(method, x, labels, budget, batch_size=batch_size, seed=seed)
    chosen = set(core.indices.tolist())
    weight = dict(zip(core.indices.tolist(), core.weights.tolist()))
    groups = make_batches(labels, batch_size, seed=seed)
    for cls, (batches, share) in enumerate(zip(groups, class_budgets(labels, budget).values())):
        assert sorted(torch.cat(batches).tolist()) == (labels == cls).nonzero().squeeze(1).tolist()
        picked = [b for b in batches if b[0].item() in chosen]
        for b in batches:  # all or nothing, one weight per batch
            members = set(b.tolist())
            assert members <= chosen or not members & chosen
            assert len({weight[i] for i in members & chosen}) <= 1
        n_expected = len(batches) if METHODS[method].trains_on_all else batches_for_budget(share, sizes[cls], batch_size)
        assert len(picked) == n_expected
        if method in ("craig", "random", "full"):
            total = sum(weight[i] for b in picked for i in b.tolist())
            assert total == pytest.approx(sizes[cls], rel=1e-5)
        if method == "craig":  # CRAIG on the batch means, batch sizes as mass
            means = torch.stack([x[b].mean(0) for b in batches])
            mass = torch.tensor([float(len(b)) for b in batches])
            idx, w = craig(means, n_expected, mass=mass)
            assert sorted(int(batches[i][0]) for i in idx) == sorted(int(b[0]) for b in picked)
    full_run = select_batches(method, x, labels, 48, batch_size=batch_size, seed=seed)
    assert full_run.indices.tolist() == list(range(48))
    assert torch.equal(full_run.weights, torch.ones(48))
