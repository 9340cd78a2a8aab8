"""``adaptive``'s quotas, inclusion probabilities and draw, on cases worked out by hand."""

from __future__ import annotations

import torch

from distributed_adcs.coreset.adaptive import adaptive, class_quotas, inclusion_probabilities, systematic_sample


# -- class_quotas ------------------------------------------------------------------------------

def test_quotas_leftover_goes_to_the_largest_remainder_not_the_first_class() -> None:
    # weights 5 : 3 : 2 of 4 -> raw 2.0, 1.2, 0.8 -> floors 2, 1, 0 and the leftover unit to the
    # largest remainder, the last class.
    assert class_quotas([10, 10, 10], 4, [0.5, 0.3, 0.2]) == [2, 1, 1]


def test_quotas_water_fill_after_capping() -> None:
    # class 0 is capped at its size 2; the unit left over after one round still goes out
    assert class_quotas([2, 10], 6, [1.0, 0.1]) == [2, 4]
    # raw 1.28, 19.1, 2.34, 4.25: class 1 capped at 10, the other 17 go 2.76 : 5.05 : 9.19
    assert class_quotas([6, 10, 11, 10], 27, [0.05, 0.9, 0.1, 0.2]) == [3, 10, 5, 9]
    # the budget of every example: every class exactly its size
    assert class_quotas([5, 7, 6, 11], 29, [0.2, 0.1, 0.9, 0.0]) == [5, 7, 6, 11]
    # a class of one example is a class too
    assert class_quotas([1, 5], 6) == [1, 5]
    assert class_quotas([1, 5, 0], 3) == [1, 2, 0]


def test_quotas_with_a_zero_floor_and_zero_errors_split_by_size() -> None:
    assert class_quotas([10, 30], 8, [0.0, 0.0], floor=0.0) == [2, 6]
    assert class_quotas([10, 30], 8, [0.0, 0.5], floor=0.0) == [0, 8]


# -- inclusion_probabilities -------------------------------------------------------------------

def test_inclusion_probabilities_cases() -> None:
    f64 = torch.float64
    got = inclusion_probabilities(torch.tensor([10.0, 1.0, 1.0, 1.0]), 2)
    torch.testing.assert_close(got, torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3], dtype=f64))
    torch.testing.assert_close(inclusion_probabilities(torch.tensor([1.0, 3.0]), 1), torch.tensor([0.25, 0.75], dtype=f64))
    got = inclusion_probabilities(torch.tensor([10.0, 10.0, 0.0, 0.0]), 2)
    assert got is not None and got.tolist() == [1.0, 1.0, 0.0, 0.0]
    for k in (3, 4):  # k >= n: every item surely, exactly 1 (not 0.9999999999999999)
        got = inclusion_probabilities(torch.tensor([0.1, 0.1, 0.1]), k)
        assert got.dtype == f64 and got.tolist() == [1.0, 1.0, 1.0]


# -- systematic_sample -------------------------------------------------------------------------

def _ref_systematic(pi: torch.Tensor, seed: int) -> list[int]:
    """The documented draw: a random order, the pi laid end to end, points u, u + 1, ..."""
    g = torch.Generator().manual_seed(seed)
    n = pi.numel()
    k = round(float(pi.sum()))
    order = torch.randperm(n, generator=g).tolist()
    u = float(torch.rand(1, generator=g, dtype=torch.float64))
    out, end, pos = [], 0.0, 0
    ends = []
    for i in order:
        end += float(pi[i])
        ends.append(end)
    ends[-1] = max(ends[-1], float(k))
    for j in range(k):
        p = u + j
        while pos < n - 1 and not ends[pos] > p:
            pos += 1
        out.append(order[pos])
    return out


def test_systematic_sample_is_the_documented_draw() -> None:
    g = torch.Generator().manual_seed(0)
    pi = inclusion_probabilities(torch.rand(40000, generator=g) + 0.05, 20000)
    for seed in (0, 1):
        got = systematic_sample(pi, torch.Generator().manual_seed(seed))
        assert got.dtype == torch.int64 and got.numel() == 20000 and got.unique().numel() == 20000
        assert got.tolist() == _ref_systematic(pi, seed)


def test_systematic_sample_small_cases() -> None:
    g = torch.Generator().manual_seed(0)
    assert systematic_sample(torch.ones(1, dtype=torch.float64), g).tolist() == [0]
    one = systematic_sample(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), g)
    assert one.tolist() == [1]
    for _ in range(5):
        s = systematic_sample(torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64), g)
        assert s.numel() == 1 and 0 <= int(s) < 4
    none = systematic_sample(torch.zeros(4, dtype=torch.float64), g)
    assert none.dtype == torch.int64 and none.shape == (0,)


# -- adaptive ----------------------------------------------------------------------------------

def _one_class(scores: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(scores, dtype=torch.float64), torch.zeros(len(scores), dtype=torch.int64)


def test_adaptive_weights_are_inverse_inclusion_probabilities() -> None:
    # 8 recorded losses, k = 2, uniform share u: pi_i = k * ((1 - u) * s_i / sum(s) + u / 8)
    # (none reaches 1 here), and a drawn example weighs 1 / pi_i.
    raw = [0.1, 0.3, 0.0, 0.5, 0.2, 0.05, 0.4, 0.45]  # all below 1, one exactly 0
    scores, labels = _one_class(raw)
    for u in (0.0, 0.5):
        s = torch.tensor(raw, dtype=torch.float64)
        pi = 2 * ((1 - u) * s / s.sum() + u / 8)
        drawn = set()
        for seed in range(6):
            core = adaptive(scores, labels, 2, uniform=u, seed=seed)
            assert len(core) == 2
            torch.testing.assert_close(core.weights, (1 / pi[core.indices]).float())
            drawn.update(core.indices.tolist())
        if u == 0.0:
            assert 2 not in drawn  # a zero loss is never drawn without the uniform share


def test_adaptive_all_zero_or_negligible_losses_sample_uniformly() -> None:
    for raw in ([0.0] * 6, [-1.0, 0.0, 0.0, -2.0, 0.0, 0.0], [1e-12, 0.0, 0.0, 0.0, 0.0, 0.0]):
        scores, labels = _one_class(raw)
        core = adaptive(scores, labels, 3, uniform=0.0, seed=0)
        assert len(core) == 3 and torch.equal(core.weights, torch.full((3,), 2.0))


def test_adaptive_unrecorded_examples_fill_the_quota_first() -> None:
    nan = float("nan")
    # class 0: 4 unrecorded >= its quota 3: exactly those 4, weight 1; class 1: nothing recorded
    scores = torch.tensor([nan, 0.5, nan, nan, 2.0, nan, 1.0, nan, nan, nan], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    core = adaptive(scores, labels, 4, seed=0)
    assert core.indices.tolist() == [0, 2, 3, 5, 7, 8, 9] and torch.equal(core.weights, torch.ones(7))


def test_adaptive_defaults_and_arguments_reach_the_draw() -> None:
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 3, (120,), generator=g)
    scores = torch.rand(120, generator=g, dtype=torch.float64) * 3
    err = torch.tensor([0.9, 0.02, 0.3])
    a = adaptive(scores, labels, 30, class_error=err)
    b = adaptive(scores, labels, 30, class_error=err, seed=0, uniform=0.5, floor=0.1)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.weights, b.weights)
    sizes = torch.bincount(labels, minlength=3).tolist()
    for floor in (0.1, 0.5):
        core = adaptive(scores, labels, 30, class_error=err, floor=floor)
        assert torch.bincount(labels[core.indices], minlength=3).tolist() == class_quotas(sizes, 30, err.tolist(), floor)
    assert class_quotas(sizes, 30, err.tolist(), 0.5) != class_quotas(sizes, 30, err.tolist(), 0.1)
