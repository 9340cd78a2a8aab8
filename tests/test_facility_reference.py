"""CRAIG's facility location against brute-force float64 / int64 references.

Sizes are chosen above the row blocks of ``distributed_adcs.coreset.facility`` (64 rows per
matrix block, 32 per incremental update, 512 per distance chunk, 1024 per objective chunk)
and above n = 512, where n * L passes 2**24 (the last integer a float32 holds exactly).
"""

from __future__ import annotations

import math

import pytest
import torch

from distributed_adcs.coreset.facility import (
    craig,
    facility_location_greedy,
    facility_location_value,
    grid_distances,
    grid_levels,
    max_pairwise_distance,
    naive_facility_location_greedy,
    similarity_matrix,
    similarity_offset,
)


def _pairwise(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Exact float64 distances from explicit differences (no Gram formula)."""
    x = x.double()
    y = x if y is None else y.double()
    return (x[:, None, :] - y[None, :, :]).pow(2).sum(-1).sqrt()


def _offset_data(n: int, d: int, seed: int, offset: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shift = torch.linspace(-offset, 2 * offset, d)  # per-coordinate offsets, mixed signs
    return torch.randn(n, d, generator=g) + shift


def _ref_greedy(grid: torch.Tensor, levels: int, k: int) -> tuple[list[int], torch.Tensor]:
    """Plain greedy on the integer grid: gain_j = sum_i cur_i - min(D_ij, cur_i), lowest index wins."""
    d = grid.to(torch.int64)
    n = d.shape[0]
    cur = torch.full((n,), levels, dtype=torch.int64)
    picks: list[int] = []
    for _ in range(k):
        gains = (cur[None, :] - torch.minimum(d, cur[None, :])).sum(1)
        gains[picks] = -1
        j = int(torch.argmax(gains))
        picks.append(j)
        cur = torch.minimum(cur, d[j])
    # nearest pick of every point, ties to the earliest pick
    assign = torch.argmin(d[:, picks], dim=1)
    return picks, assign


# -- constants of the grid ---------------------------------------------------------------------

def test_grid_levels_follow_the_documented_formula() -> None:
    for n in (1, 2, 10, 65537, 65538, 100_000, 131_072, 10**6, 10**9):
        want = max(2, min(2**15 - 1, (2**31 - 1) // n))
        got = grid_levels(n)
        assert got == want and isinstance(got, int), n
    assert grid_levels(10) == 32767 and grid_levels(100_000) == 21474 and grid_levels(10**9) == 2


def test_similarity_offset() -> None:
    assert similarity_offset(2.0) == 2.0 * (1.0 + 1e-6)
    assert similarity_offset(0.5) == 0.5 * (1.0 + 1e-6)
    assert similarity_offset(0.0) == 1e-12


# -- max_pairwise_distance ---------------------------------------------------------------------

@pytest.mark.parametrize("offset", [0.0, 3e5])
def test_max_pairwise_distance_is_exact(offset: float) -> None:
    x = _offset_data(700, 3, 1, offset)
    want = float(_pairwise(x).max())
    assert max_pairwise_distance(x) == pytest.approx(want, rel=1e-11)
    assert max_pairwise_distance(x.double()) == pytest.approx(want, rel=1e-11)


def _ring(m: int, extra_angle: float, extra_radius: float, at: tuple[int, int]) -> torch.Tensor:
    ring = [(math.cos(2 * math.pi * i / m), math.sin(2 * math.pi * i / m)) for i in range(m)]
    pair = [(extra_radius * math.cos(extra_angle), extra_radius * math.sin(extra_angle)),
            (-extra_radius * math.cos(extra_angle), -extra_radius * math.sin(extra_angle))]
    pts = ring[:]
    for pos, p in sorted(zip(at, pair)):
        pts.insert(pos, p)
    return torch.tensor(pts, dtype=torch.float64)


@pytest.mark.parametrize("m, radius, angle_steps, at", [
    (257, 0.99999, 0.3, (0, 258)),  # the farthest pair is not among the 256 farthest from the centroid
    (1025, 1 - 3e-7, 0.25, (512, 1025)),  # the diameter joins rows 512 and 1025 of the candidates
])
def test_max_pairwise_distance_finds_a_pair_inside_the_cloud(m, radius, angle_steps, at) -> None:
    x = _ring(m, angle_steps * 2 * math.pi / m, radius, at)
    dist = _pairwise(x)
    want = float(dist.max())
    keep = torch.ones(len(x), dtype=torch.bool)
    keep[list(at)] = False
    assert float(dist[keep][:, keep].max()) < want - 1e-7  # the outer ring alone is shorter
    if m > 512:  # here only the two inner points together make the diameter
        assert want == pytest.approx(2 * radius, rel=1e-12)
        assert float(dist[keep].max()) < want - 1e-8
    assert max_pairwise_distance(x) == pytest.approx(want, rel=1e-13)


# -- grid_distances ----------------------------------------------------------------------------

@pytest.mark.parametrize("n, scale, offset", [(200, 1.0, 50.0), (150, 0.05, 0.0), (70, 40.0, -3.0)])
def test_grid_distances_match_rounded_exact_distances(n: int, scale: float, offset: float) -> None:
    x = _offset_data(n, 5, n, offset) * scale
    grid, row_sums, levels = grid_distances(x)
    assert levels == grid_levels(n)
    assert grid.dtype == torch.int16 and grid.shape == (n, n)
    assert row_sums.dtype == torch.int64 and torch.equal(row_sums, grid.to(torch.int64).sum(1))
    assert torch.equal(grid, grid.T) and bool((grid.diagonal() == 0).all())
    exact = _pairwise(x)
    ref = exact * (levels - 1) / exact.max()
    assert int(grid.max()) == levels - 1  # the farthest pair is exactly L - 1
    far = ref >= (levels - 1) / 4
    assert int((grid[far] - ref[far].round()).abs().max()) <= 1  # rounding, off by one at most
    assert float((grid.double() - ref).abs().max()) <= 0.6  # half a step, plus float32 round-off
    torch.testing.assert_close(grid_distances(x.double())[0], grid)


# -- the greedy --------------------------------------------------------------------------------

def _greedy_data() -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(3)
    coarse = torch.randint(0, 9, (900, 3), generator=g).float()  # many exact and near ties
    blobs = torch.cat([torch.randn(140, 4, generator=g) * 0.3 + 4 * torch.randn(4, generator=g) for _ in range(5)])
    spread = torch.randn(600, 6, generator=g) + 20.0
    # a near-regular simplex: all distances within a few grid steps of L - 1, so every gain
    # ties or nearly ties with others, and sums near n * L (> 2**24) must stay exact integers
    simplex = torch.eye(600) + 1e-5 * torch.randn(600, 600, generator=g)
    return [(coarse, 80), (blobs, 40), (spread, 60), (simplex, 15)]


@pytest.mark.parametrize("case", range(4))
def test_greedy_matches_the_plain_greedy_on_the_grid(case: int) -> None:
    x, k = _greedy_data()[case]
    grid, _, levels = grid_distances(x)
    picks, assign = _ref_greedy(grid, levels, k)
    order, got_assign = facility_location_greedy(x, k)
    assert order.dtype == torch.int64 and got_assign.dtype == torch.int64
    assert order.tolist() == picks
    assert torch.equal(got_assign, assign)
    assert naive_facility_location_greedy(x, k).tolist() == picks


# -- objective value and similarities ----------------------------------------------------------

def test_facility_location_value_is_exact_float64() -> None:
    x = _offset_data(1100, 3, 7, 3e5)
    idx = torch.tensor([5, 100, 1050, 777])
    c = similarity_offset(float(_pairwise(x).max()))
    want = float((c - _pairwise(x, x[idx]).min(1).values).sum())
    assert facility_location_value(x, idx) == pytest.approx(want, rel=1e-12)
    assert facility_location_value(x, idx, c=3.0) == pytest.approx(float((3.0 - _pairwise(x, x[idx]).min(1).values).sum()), rel=1e-12)
    one = torch.tensor([1099])
    assert facility_location_value(x, one, c=c) == pytest.approx(float((c - _pairwise(x, x[one])[:, 0]).sum()), rel=1e-12)
    assert facility_location_value(x, torch.tensor([], dtype=torch.int64)) == 0.0


def test_similarity_matrix_is_c_minus_distance() -> None:
    x = _offset_data(90, 4, 2, 300.0)
    exact = _pairwise(x)
    want = similarity_offset(float(exact.max())) - exact
    for inp in (x, x.double()):
        s = similarity_matrix(inp)
        assert s.dtype == torch.float32 and s.shape == (90, 90)
        torch.testing.assert_close(s.double(), want, rtol=0, atol=5e-3)  # float32 cdist


# -- craig -------------------------------------------------------------------------------------

def test_craig_weights_are_assigned_masses() -> None:
    x, k = _greedy_data()[1]
    g = torch.Generator().manual_seed(0)
    mass = torch.randint(1, 4, (x.shape[0],), generator=g).float()
    idx, w = craig(x, k, mass=mass)
    grid, _, levels = grid_distances(x)
    picks, assign = _ref_greedy(grid, levels, k)
    assert idx.tolist() == picks
    assert w.dtype == torch.float32
    want = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, mass.double())
    assert torch.equal(w, want.float())


def test_craig_with_the_whole_group_returns_every_row_in_order() -> None:
    x = torch.cat([torch.ones(3, 2), torch.randn(5, 2, generator=torch.Generator().manual_seed(1))])  # duplicates
    for budget in (8, 9):
        idx, w = craig(x, budget)
        assert idx.tolist() == list(range(8)) and torch.equal(w, torch.ones(8))
