"""The stochastic greedy that CRAIG runs on groups too large for the exact greedy's n x n grid."""

from __future__ import annotations

import pytest
import torch

from distributed_adcs.coreset import facility
from distributed_adcs.coreset.facility import craig, craig_peak_bytes, facility_location_greedy, facility_location_value
from distributed_adcs.coreset.stochastic import sample_size, stochastic_facility_greedy


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
