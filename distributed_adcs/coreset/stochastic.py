"""Stochastic greedy facility location, for groups too large for the exact greedy's grid.

The exact greedy (``facility.py``) holds the ``n x n`` distance grid: 2 n² bytes, 28.8 GB for
one class of 120k examples. The stochastic greedy ("lazier than lazy greedy", Mirzasoleiman
et al., AAAI 2015) never builds it. Each of the ``k`` steps draws ``s = ceil(n/k · ln(1/ε))``
candidates from the rows not yet picked, computes the distances from every row to them
(``n x s``), and picks the candidate of largest gain

    gain_j = sum_i w_i · relu((C − d_ij) − cur_i),   cur_i = max_{p in S} (C − d_ip), cur = 0 at first,

with ``C`` an upper bound of the largest pairwise distance (twice the largest distance to the
mean; any ``C`` at or above it gives the same picks as the exact objective's ``C``). In
expectation the result is within ``1 − 1/e − ε`` of the optimum, as the exact greedy's ``1 − 1/e``;
time is ``O(n · ln(1/ε) · n · d)`` for any ``k`` and memory ``O(n · s)``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

_ROWS = 16384  # rows per block of the n x s distance computation


def sample_size(n: int, k: int, epsilon: float) -> int:
    """Candidates per step: ``ceil(n / k · ln(1 / ε))``, at least 1 and at most ``n``."""
    return max(1, min(n, math.ceil(n / k * math.log(1.0 / epsilon))))


def stochastic_peak_bytes(n: int, k: int, d: int, epsilon: float = 0.01) -> int:
    """What :func:`stochastic_facility_greedy` allocates: a block of distances to the candidates,
    its gains, and per-row state (no n² term)."""
    s = sample_size(n, k, epsilon)
    return min(n, _ROWS) * s * 4 * 3 + 4 * n * d + 8 * n * 4 + 8 * k


def stochastic_facility_greedy(embeddings: Tensor, k: int, *, generator: torch.Generator,
                               weights: Optional[Tensor] = None, epsilon: float = 0.01) -> tuple[Tensor, Tensor]:
    """``k`` picks by stochastic greedy; returns ``(order, assign)`` like the exact greedy.

    Args:
        embeddings: ``[n, d]`` float tensor (``1 <= k <= n`` checked by the caller).
        generator: draws the candidates (a CPU generator; the same seed, the same picks).
        weights: optional non-negative weight per row in the objective.
        epsilon: the approximation slack ε in ``(0, 1)``.

    Returns:
        ``order``: the picks, in selection order (``k`` distinct rows); ``assign``: per row,
        the position in ``order`` of its most similar pick (ties to the earliest).
    """
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    x = embeddings.to(torch.float32)
    x = x - x.mean(dim=0)
    n, device = x.shape[0], x.device
    c = 2.0 * float(x.norm(dim=1).max()) * (1.0 + 1e-6) + 1e-12  # >= every pairwise distance
    w = torch.ones(n, device=device) if weights is None else weights.to(device=device, dtype=torch.float32)
    s = sample_size(n, k, epsilon)
    cur = torch.zeros(n, device=device)  # similarity of each row to its best pick so far
    assign = torch.zeros(n, dtype=torch.long, device=device)
    free = torch.ones(n, dtype=torch.bool)  # on the CPU, where the generator draws
    order = torch.empty(k, dtype=torch.long)
    for step in range(k):
        remaining = free.nonzero().squeeze(1)
        draw = torch.randperm(remaining.numel(), generator=generator)[: min(s, remaining.numel())]
        cand = remaining[draw].sort().values.to(device)  # ties to the lowest index, as the exact greedy
        gains = torch.zeros(cand.numel(), dtype=torch.float64, device=device)
        for r0 in range(0, n, _ROWS):
            sim = c - torch.cdist(x[r0:r0 + _ROWS], x[cand])
            gains += (w[r0:r0 + _ROWS, None] * (sim - cur[r0:r0 + _ROWS, None]).clamp_min(0)).sum(0, dtype=torch.float64)
        best = int(cand[int(torch.argmax(gains))])
        order[step] = best
        free[best] = False
        sim = c - torch.cdist(x, x[best:best + 1]).squeeze(1)
        better = sim > cur
        cur = torch.where(better, sim, cur)
        assign[better] = step
    return order.to(device), assign
