"""The stochastic greedy that CRAIG runs on groups too large for the exact greedy's n x n grid."""

from __future__ import annotations

import pytest
import torch

from distributed_adcs.coreset import facility
from distributed_adcs.coreset.facility import craig, craig_peak_bytes, facility_location_greedy, facility_location_value
from distributed_adcs.coreset import stochastic
from distributed_adcs.coreset.stochastic import sample_size, stochastic_facility_greedy, stochastic_peak_bytes


def _data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, 10, generator=g) * 3  # clustered, as gradient embeddings are
    return centres[torch.randint(0, 12, (n,), generator=g)] + torch.randn(n, 10, generator=g)


@pytest.mark.parametrize("k", [30, 300])
def test_its_objective_is_within_half_a_percent_of_the_exact_greedy(k):
    x = _data(3000)
    exact, _ = facility_location_greedy(x, k)
    picks, _ = stochastic_facility_greedy(x, k, generator=torch.Generator().manual_seed(1))
    randomly = torch.randperm(3000, generator=torch.Generator().manual_seed(2))[:k]
    f_exact, f_ours, f_random = (facility_location_value(x, p) for p in (exact, picks, randomly))
    assert f_ours >= 0.995 * f_exact, (f_ours, f_exact)
    # what the bound is worth: a random subset of the same size is clearly worse
    assert f_exact - f_random > 10 * (f_exact - f_ours), (f_exact, f_ours, f_random)


def test_picks_are_distinct_reproducible_and_assign_each_row_to_its_nearest_pick():
    x = _data(2000)
    order, assign = stochastic_facility_greedy(x, 150, generator=torch.Generator().manual_seed(5))
    again, _ = stochastic_facility_greedy(x, 150, generator=torch.Generator().manual_seed(5))
    assert torch.equal(order, again) and len(set(order.tolist())) == 150
    d = torch.cdist(x.double(), x[order].double())
    nearest = d.min(dim=1).values
    assert torch.allclose(d[torch.arange(2000), assign], nearest, atol=1e-4)
    assert torch.equal(assign[order], torch.arange(150))  # a pick covers itself


def test_sample_size_follows_n_over_k_log_one_over_epsilon():
    assert sample_size(120_000, 36_000, 0.01) == 16
    assert sample_size(100, 1, 0.01) == 100  # never more than n
    with pytest.raises(ValueError, match="epsilon"):
        stochastic_facility_greedy(_data(10), 2, generator=torch.Generator(), epsilon=1.0)


def test_craig_switches_to_it_above_the_exact_limit(monkeypatch):
    x = _data(1200)
    monkeypatch.setattr(facility, "EXACT_LIMIT", 1000)  # the switch, at a size a test can run
    idx, w = craig(x, 120, generator=torch.Generator().manual_seed(3))
    ref, _ = stochastic_facility_greedy(x, 120, generator=torch.Generator().manual_seed(3))
    assert torch.equal(idx, ref)  # it ran the stochastic greedy
    assert abs(float(w.sum()) - 1200) < 1e-3 and (w >= 0).all()
    mass = torch.randint(1, 4, (1200,)).double()
    idx, w = craig(x, 120, mass=mass, weighted=True, generator=torch.Generator().manual_seed(3))
    assert abs(float(w.sum()) - float(mass.sum())) < 1e-3


def test_a_class_of_120k_examples_no_longer_needs_the_dense_grid():
    exact = 2 * 120_000 ** 2  # 28.8 GB of int16
    assert craig_peak_bytes(120_000, 36_000, 10) < exact / 100
    assert craig_peak_bytes(10_000, 3_000, 10) >= 2 * 10_000 ** 2  # below the limit: the exact greedy


def test_sample_size_is_at_least_one_and_epsilon_zero_is_refused():
    assert sample_size(10, 10, 0.9) == 1  # ceil(1 · ln(1/0.9)) = ceil(0.105)
    with pytest.raises(ValueError, match="epsilon"):
        stochastic_facility_greedy(_data(10), 2, generator=torch.Generator(), epsilon=0.0)


def test_the_row_blocks_sum_to_what_one_block_gives(monkeypatch):
    # the n x s distances are computed in blocks of _ROWS rows; blocks of 7 over 500 rows (the
    # last one short) must give the picks and assignment of a single block
    x = _data(500)
    whole = stochastic_facility_greedy(x, 40, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(stochastic, "_ROWS", 7)
    blocked = stochastic_facility_greedy(x, 40, generator=torch.Generator().manual_seed(4))
    assert torch.equal(whole[0], blocked[0]) and torch.equal(whole[1], blocked[1])


def test_k_equal_to_n_picks_every_row_once_and_ties_go_to_the_earliest_pick():
    # duplicated rows: once one copy is picked the other adds no gain, and every row is covered
    # as well by either; k = n still picks every row once (a picked row is never drawn again),
    # and a row covered equally by two picks is assigned to the earlier one
    base = _data(6, seed=3)
    x = torch.cat([base, base[:4]])  # rows 6..9 repeat rows 0..3
    order, assign = stochastic_facility_greedy(x, 10, generator=torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(10))
    step = {row: i for i, row in enumerate(order.tolist())}
    for row in range(10):
        twin = row + 6 if row < 4 else row - 6 if row >= 6 else row
        assert int(assign[row]) == min(step[row], step[twin]), (row, assign.tolist(), order.tolist())


def test_weights_move_the_pick_to_the_rows_that_carry_them():
    # k = 1 with every row a candidate (s = n): the pick maximises sum_i w_i (C - d_ij); with all
    # the weight on one outlying row, that row itself is the pick (unweighted, it never is)
    x = _data(200)
    x[17] = x[17] + 40.0
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    (plain,), _ = stochastic_facility_greedy(x, 1, generator=g())
    w = torch.zeros(200, dtype=torch.float64)
    w[17] = 1.0
    (weighted,), _ = stochastic_facility_greedy(x, 1, generator=g(), weights=w)
    assert int(plain) != 17 and int(weighted) == 17


def test_peak_bytes_count_each_buffer_the_greedy_holds():
    # three float32 blocks of rows x candidates (distances, similarities, gains' products), the
    # float32 embeddings, four 8-byte-or-smaller per-row buffers (counted at 8) and the picks
    n, k, d = 1000, 100, 10
    s = sample_size(n, k, 0.01)  # ceil(10 · ln 100) = 47
    assert s == 47
    assert stochastic_peak_bytes(n, k, d) == n * s * 4 * 3 + 4 * n * d + 8 * n * 4 + 8 * k == 636_800
    big = 40_000  # above one block: the block's rows, not n
    s = sample_size(big, 4000, 0.01)
    assert stochastic_peak_bytes(big, 4000, d) == stochastic._ROWS * s * 12 + 4 * big * d + 32 * big + 8 * 4000
