"""The two-round merge's second round for CRAIG maximises the *weighted* facility location: a
round-one candidate standing for w examples counts w times, as w copies of it would."""

from __future__ import annotations

import torch

from distributed_adcs.coreset.facility import (craig, grid_distances, greedy_on_grid,
                                               weighted_greedy_on_grid)
from distributed_adcs.coreset.greedi import craig_second_round


def _grid(n: int, seed: int, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    grid, row_sums, levels = grid_distances(torch.randn(n, d, generator=g))
    return grid, row_sums, levels, g


def _brute_force(grid: torch.Tensor, levels: int, k: int, w: torch.Tensor) -> list[int]:
    """Plain greedy: every step, the row whose addition raises sum_i w_i max_S (L - D_ij) most."""
    sim = levels - grid.long()
    best = torch.zeros(grid.shape[0], dtype=torch.int64)
    picks: list[int] = []
    for _ in range(k):
        gains = ((sim - best[None, :]).clamp_min(0) * w[None, :]).sum(1)  # gain of row j, over points i
        gains[picks] = -1
        j = int(gains.argmax())
        picks.append(j)
        best = torch.maximum(best, sim[j])
    return picks


def test_weighted_greedy_equals_brute_force_above_the_block_sizes():
    grid, _, levels, g = _grid(150, 0)  # more rows than the 64-row and 32-row blocks
    w = torch.randint(0, 9, (150,), generator=g)
    order, assign = weighted_greedy_on_grid(grid, levels, 40, w)
    assert order.tolist() == _brute_force(grid, levels, 40, w)
    # assign: each point's nearest pick (ties to the earliest)
    d = grid.long()[:, order]
    assert torch.equal(d.gather(1, assign[:, None]).squeeze(1), d.min(1).values)


def test_a_row_of_weight_w_counts_as_w_copies():
    grid, _, levels, g = _grid(40, 1)
    w = torch.randint(1, 5, (40,), generator=g)
    copies = torch.repeat_interleave(torch.arange(40), w)  # row r repeated w_r times, in order
    big = grid[copies][:, copies].contiguous()
    order_big, _ = greedy_on_grid(big, big.long().sum(1), levels, 12)
    order, _ = weighted_greedy_on_grid(grid, levels, 12, w)
    assert copies[order_big].tolist() == order.tolist()


def test_unit_weights_are_the_plain_greedy():
    grid, row_sums, levels, _ = _grid(120, 2)
    order, assign = weighted_greedy_on_grid(grid, levels, 30, torch.ones(120))
    plain_order, plain_assign = greedy_on_grid(grid, row_sums, levels, 30)
    assert torch.equal(order, plain_order) and torch.equal(assign, plain_assign)


def test_second_round_picks_the_candidate_that_stands_for_most_examples():
    """One candidate far away stands for 100 examples; five close together stand for one each.
    With one pick, the unweighted greedy takes one of the five; the weighted one the 100."""
    emb = torch.tensor([[10.0, 0.0], [0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [0.05, 0.05]])
    w = torch.tensor([100.0, 1, 1, 1, 1, 1])
    unweighted, _ = craig(emb, 1)
    assert unweighted.tolist() != [0]
    idx, weights = craig_second_round(emb, w, 1, seed=0)
    assert idx.tolist() == [0] and weights.tolist() == [105.0]  # every example is still accounted for
    idx, weights = craig_second_round(emb, w, 2, seed=0)
    assert idx.tolist() == [0, 5] and weights.tolist() == [100.0, 5.0]
