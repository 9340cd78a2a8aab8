"""CRAIG: facility-location coresets on gradient embeddings.

Objective (per group of ``n`` examples with embeddings ``g``)::

    s_ij = C - ||g_i - g_j||_2,   C = max_ij ||g_i - g_j||_2 + eps
    F(S) = sum_i max_{j in S} s_ij          (F(empty) = 0)

Choice of C: the largest pairwise distance plus a small ``eps`` makes every
similarity strictly positive, so each example is covered by the very first pick
and F is monotone submodular.  Any ``C >= max distance`` gives the SAME greedy
choices: for a non-empty S the gain of j is ``sum_i relu(d_i(S) - d_ij)``
(no C), and the first pick maximises ``n*C - sum_i d_ij`` (argmin of the
distance sum whatever C is).  C therefore only shifts the objective value.

Exact, order-independent arithmetic: the greedy runs on distances rounded to
a fixed-point grid, ``D_ij = round(||g_i - g_j|| / h)`` with step
``h = d_max / (L - 1)`` and ``L = min(2**15 - 1, (2**31 - 1) // n)`` levels
(32,767 for any n <= 65,537), so ``eps`` above is one grid step, ``C = L * h``
and the grid similarity is ``L - D_ij`` in ``[1, L]``.  The grid is stored as
int16 (200 MB at n = 10,000) and every gain, a sum of ``n`` grid values, is
an exact int32 whatever the summation order, thread count or device; the
accelerated greedy below therefore picks exactly what the plain greedy picks
on the same grid, ties included (lowest index wins).  The rounding (at most
half a step, ~1.5e-5 * d_max) is far below the noise of gradient embeddings;
on the benchmark data the objective is within 1e-5 of apricot's float greedy.

Acceleration: instead of re-evaluating all ``n`` gains per step (plain greedy,
O(k n^2)), the exact gains are kept up to date incrementally.  A pick only
changes ``cur_i = min_{j in S} D_ij`` on the set A of points it now covers
best, and then every gain changes by ``sum_{i in A} clamp(D_ij, new_i, old_i) - old_i``,
which reads only the rows ``i in A`` (the matrix is exactly symmetric by
construction).  Points switch to a new pick ever more rarely, so the total
work is about ``n^2 * (1 + ln k)`` integer operations in chunked, in-cache
passes.  Memory: the ``n x n`` int16 grid plus O(64 n) buffers.

Threads: the build and the loop issue thousands of mid-sized tensor ops.
On an idle CPU torch's default intra-op threads help (n = 10,000, k = 1,000:
~0.8 s with 2 threads vs ~1.05 s with 1), but when other processes keep the
cores busy each parallel op can wait milliseconds for a descheduled peer
thread (measured 3-50 s for the same call).  On shared CPUs wrap the call in
``types.single_threaded(device)`` (Ray workers already default to one thread).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from distributed_adcs.coreset.simple import full
from distributed_adcs.coreset.types import check_budget, check_embeddings, check_mass

_ROWS = 64  # rows per block when building/scanning the matrix (2.5 MB float32 at n = 10k)
_DELTA_ROWS = 32  # rows per block for incremental gain updates (int16 + int32 copy: ~1 MB, in L2)


def max_pairwise_distance(embeddings: Tensor) -> float:
    """Largest Euclidean distance between two rows (exact, float64).

    Pruned: the farthest pair among the 256 rows farthest from the centroid
    gives a lower bound ``lb``; only rows with ``r_i + r_max > lb`` (``r`` =
    distance to the centroid) can end a longer pair (triangle inequality), and
    just those rows are compared with everything.  Typically O(n d) work;
    O(n^2 d) in the worst case (all rows on a sphere).
    """
    x = embeddings.to(torch.float64)
    x = x - x.mean(dim=0)
    radius = x.norm(dim=1)
    top = torch.topk(radius, min(x.shape[0], 256)).indices
    best = float(torch.cdist(x[top], x[top]).max())
    rows = (radius + radius.max() > best).nonzero().squeeze(1)
    for c0 in range(0, rows.numel(), 512):
        best = max(best, float(torch.cdist(x[rows[c0 : c0 + 512]], x).max()))
    return best


def grid_levels(n: int) -> int:
    """Number of fixed-point levels ``L`` for a group of ``n`` (see module doc)."""
    return max(2, min(2**15 - 1, (2**31 - 1) // max(n, 1)))


def grid_distances(embeddings: Tensor) -> tuple[Tensor, Tensor, int]:
    """Integer distance matrix of the greedy, its row sums and the level count.

    ``D_ij = min(L - 1, round(||g_i - g_j|| * (L - 1) / d_max))``, computed on
    mean-centred, pre-scaled float32 data by the Gram formula
    ``||a||^2 + ||b||^2 - 2 a.b``, block by block over the upper triangle; each
    block is mirrored, so ``D == D.T`` exactly and ``D_ii = 0``.  The grid
    similarity is ``L - D_ij`` in ``[1, L]``.

    Args:
        embeddings: ``[n, d]`` float tensor.

    Returns:
        ``(D, row_sums, L)``: ``[n, n]`` int16 on the input's device, int64
        ``[n]`` row sums, and ``L`` (:func:`grid_levels`).
    """
    x = embeddings.to(torch.float32)
    x = x - x.mean(dim=0)
    n = x.shape[0]
    levels = grid_levels(n)
    d_max = max_pairwise_distance(embeddings)
    x = x * ((levels - 1) / d_max if d_max > 0 else 0.0)  # distances come out in grid units
    sq = (x * x).sum(dim=1)
    grid = torch.empty(n, n, dtype=torch.int16, device=x.device)
    row_sums = torch.zeros(n, dtype=torch.int64, device=x.device)
    fbuf = torch.empty(min(n, _ROWS) * n, dtype=torch.float32, device=x.device)
    ibuf = torch.empty(2 * min(n, _ROWS) * n, dtype=torch.int16, device=x.device)
    for r0 in range(0, n, _ROWS):
        r1 = min(n, r0 + _ROWS)
        b, m = r1 - r0, n - r0
        t = fbuf[: b * m].view(b, m)  # distances from rows r0:r1 to columns r0:n
        torch.addmm(sq[None, r0:], x[r0:r1], x[r0:].T, alpha=-2.0, out=t)
        t.add_(sq[r0:r1, None]).clamp_min_(0.0).sqrt_().round_().clamp_max_(levels - 1)
        diag = t[:, :b]
        upper = torch.triu(diag, diagonal=1)
        diag.copy_(upper + upper.T)  # mirror inside the diagonal block too
        blk = ibuf[: b * m].view(b, m).copy_(t)
        grid[r0:r1, r0:].copy_(blk)
        right = blk[:, b:]
        if right.numel():  # lower triangle: transpose via a contiguous buffer
            mirror = ibuf[b * m : b * m + right.numel()].view(m - b, b).copy_(right.T)
            grid[r1:, r0:r1].copy_(mirror)
            row_sums[r1:] += right.sum(dim=0, dtype=torch.int32)
        row_sums[r0:r1] += blk.sum(dim=1, dtype=torch.int32)
    return grid, row_sums, levels


def _all_gains(grid: Tensor, cur: Tensor, bufs: tuple[Tensor, Tensor]) -> Tensor:
    """Exact int32 gains ``sum_i relu(cur_i - D_ji)`` for every row j."""
    n = grid.shape[0]
    kept = torch.empty(n, dtype=torch.int32, device=grid.device)
    for r0 in range(0, n, _ROWS):
        r1 = min(n, r0 + _ROWS)
        m16, m32 = (b[: (r1 - r0) * n].view(r1 - r0, n) for b in bufs)
        torch.minimum(grid[r0:r1], cur, out=m16)
        kept[r0:r1] = m32.copy_(m16).sum(dim=1, dtype=torch.int32)
    return kept.neg_().add_(cur.sum(dtype=torch.int32))


def _add_deltas(grid: Tensor, changed: Tensor, old: Tensor, new: Tensor,
                gains: Tensor, bufs: tuple[Tensor, Tensor]) -> None:
    """Update gains in place after the points ``changed`` moved from ``old`` to ``new``.

    Each gain loses ``sum_{i in changed} old_i - clamp(D_ij, new_i, old_i)``.
    """
    n = grid.shape[0]
    for c0 in range(0, changed.numel(), _DELTA_ROWS):
        idx = changed[c0 : c0 + _DELTA_ROWS]
        hi, lo = old[c0 : c0 + _DELTA_ROWS, None], new[c0 : c0 + _DELTA_ROWS, None]
        m16, m32 = (b[: idx.numel() * n].view(idx.numel(), n) for b in bufs)
        torch.index_select(grid, 0, idx, out=m16)  # row i == column i (symmetric)
        torch.maximum(m16, lo, out=m16)
        torch.minimum(m16, hi, out=m16)
        gains += m32.copy_(m16).sum(dim=0, dtype=torch.int32)  # int32: no overflow
        gains -= hi.sum(dtype=torch.int32)


# Above this many rows in one group, CRAIG runs the stochastic greedy (stochastic.py): the exact
# greedy's int16 grid would take 2 n^2 bytes (1.8 GB here, 28.8 GB at 120k rows).
EXACT_LIMIT = 30_000


def craig_peak_bytes(n: int, k: int, d: int) -> int:
    """What :func:`craig` allocates for ``n`` embeddings of ``d`` floats. Up to
    :data:`EXACT_LIMIT` rows: the dense int16 grid (n^2 * 2 bytes), its block buffers, the
    float64 copy for the distance scale, and per-example state (the second round's nearest
    centres go in row blocks); above it, the stochastic greedy's O(n * s) blocks."""
    if n > EXACT_LIMIT:
        from distributed_adcs.coreset.stochastic import stochastic_peak_bytes

        return stochastic_peak_bytes(n, k, d)
    rows = min(n, _ROWS)
    return 2 * n * n + rows * n * (4 + 2 * 2) + 8 * n * d + 24 * n + 8 * k


def greedy_on_grid(grid: Tensor, row_sums: Tensor, levels: int, k: int) -> tuple[Tensor, Tensor]:
    """Accelerated exact greedy on an integer distance grid.

    Args:
        grid: ``[n, n]`` symmetric int16 distances (from :func:`grid_distances`).
        row_sums: int64 row sums of ``grid``.
        levels: ``L``; the empty selection covers every point at distance ``L``.
        k: number of picks, ``1 <= k <= n``.

    Returns:
        ``(order, assign)``: int64 ``[k]`` picks in selection order, and int64
        ``[n]`` position (in ``order``) of each point's nearest pick, ties to
        the earliest pick.
    """
    n = grid.shape[0]
    gains = (n * levels - row_sums).to(torch.int32)  # exact: every gain is <= n * L < 2**31
    cur = torch.full((n,), levels, dtype=grid.dtype, device=grid.device)
    chosen = torch.zeros(n, dtype=torch.bool, device=grid.device)
    assign = torch.zeros(n, dtype=torch.int64, device=grid.device)
    order = torch.empty(k, dtype=torch.int64, device=grid.device)
    size = max(_ROWS, _DELTA_ROWS) * n
    bufs = (torch.empty(size, dtype=grid.dtype, device=grid.device),
            torch.empty(size, dtype=torch.int32, device=grid.device))
    for t in range(k):
        j = torch.argmax(gains)  # first maximal index: lowest-index tie-break
        order[t] = j
        chosen[j] = True
        row = grid[j]
        changed = (row < cur).nonzero().squeeze(1)  # strict: ties stay with earlier picks
        assign[changed] = t
        if 2 * changed.numel() > n:  # cheaper to rescan everything
            torch.minimum(cur, row, out=cur)
            gains = _all_gains(grid, cur, bufs)
            gains.masked_fill_(chosen, -1)
        else:
            new = row[changed]
            _add_deltas(grid, changed, cur[changed], new, gains, bufs)
            cur[changed] = new
            # A pick's true gain is 0 from now on and its deltas are all 0, so
            # -1 marks it for good (open gains are >= 0).
            gains[j] = -1
    return order, assign


def _weighted_gains(grid: Tensor, cur: Tensor, w: Tensor) -> Tensor:
    """Exact int64 gains ``sum_i w_i relu(cur_i - D_ji)`` for every row j."""
    n = grid.shape[0]
    gains = torch.empty(n, dtype=torch.int64, device=grid.device)
    for r0 in range(0, n, _ROWS):
        r1 = min(n, r0 + _ROWS)
        covered = (cur - grid[r0:r1].to(torch.int64)).clamp_min_(0)  # row j of the grid is column j
        gains[r0:r1] = (covered * w).sum(dim=1)
    return gains


def weighted_greedy_on_grid(grid: Tensor, levels: int, k: int, w: Tensor) -> tuple[Tensor, Tensor]:
    """The greedy of :func:`greedy_on_grid` for ``F(S) = sum_i w_i max_{j in S} (L - D_ij)``:
    row ``i`` counts ``w_i`` times (a candidate of the two-round merge standing for ``w_i``
    examples), exactly as ``w_i`` copies of it would. Gains are exact int64 sums; the same
    incremental update, over the rows a pick takes over.

    Args:
        w: non-negative integer weights ``[n]`` (any integer or integral float dtype).

    Returns:
        ``(order, assign)`` as in :func:`greedy_on_grid`.
    """
    n = grid.shape[0]
    w = w.to(device=grid.device, dtype=torch.int64)
    cur = torch.full((n,), levels, dtype=torch.int64, device=grid.device)
    gains = _weighted_gains(grid, cur, w)
    chosen = torch.zeros(n, dtype=torch.bool, device=grid.device)
    assign = torch.zeros(n, dtype=torch.int64, device=grid.device)
    order = torch.empty(k, dtype=torch.int64, device=grid.device)
    for t in range(k):
        j = torch.argmax(gains.masked_fill(chosen, -1))  # first maximal index: lowest-index tie-break
        order[t] = j
        chosen[j] = True
        row = grid[j].to(torch.int64)
        changed = (row < cur).nonzero().squeeze(1)  # strict: ties stay with earlier picks
        assign[changed] = t
        for c0 in range(0, changed.numel(), _DELTA_ROWS):  # gains lose what the changed rows no longer offer
            idx = changed[c0:c0 + _DELTA_ROWS]
            d = grid.index_select(0, idx).to(torch.int64)  # row i == column i (symmetric)
            old, new = cur[idx, None], row[idx, None]
            gains -= (w[idx, None] * ((old - d).clamp_min_(0) - (new - d).clamp_min_(0))).sum(dim=0)
        cur[changed] = row[changed]
    return order, assign


def facility_location_greedy(embeddings: Tensor, k: int, weights: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Greedy facility-location selection (accelerated, exact).

    Args:
        embeddings: ``[n, d]`` float tensor.
        k: number of picks (``1 <= k <= n``).
        weights: optional non-negative integer weight per row: the objective counts row ``i``
            ``weights[i]`` times (:func:`weighted_greedy_on_grid`).

    Returns:
        ``(order, assign)`` as in :func:`greedy_on_grid`.
    """
    check_embeddings(embeddings)
    k = check_budget(k, embeddings.shape[0])
    grid, row_sums, levels = grid_distances(embeddings)
    if weights is not None:
        return weighted_greedy_on_grid(grid, levels, k, weights)
    return greedy_on_grid(grid, row_sums, levels, k)


def naive_facility_location_greedy(embeddings: Tensor, k: int) -> Tensor:
    """Reference plain greedy, O(k n^2): recomputes every gain at every step.

    For tests only.  Same fixed-point similarities and tie-break (lowest index)
    as :func:`facility_location_greedy`.

    Args:
        embeddings: ``[n, d]`` float tensor.
        k: number of picks.

    Returns:
        int64 ``[k]`` picks in selection order.
    """
    grid, _, levels = grid_distances(embeddings)
    grid = grid.to(torch.int64)
    n = grid.shape[0]
    cur = torch.full((n,), levels, dtype=torch.int64, device=grid.device)
    chosen = torch.zeros(n, dtype=torch.bool, device=grid.device)
    picks = []
    for _ in range(min(k, n)):
        gains = cur.sum() - torch.minimum(grid, cur[None, :]).sum(dim=1)
        gains[chosen] = -1
        j = int(torch.argmax(gains))
        picks.append(j)
        chosen[j] = True
        cur = torch.minimum(cur, grid[j])
    return torch.tensor(picks, dtype=torch.int64, device=grid.device)


def similarity_offset(d_max: float) -> float:
    """The constant C used for objective values: ``d_max * (1 + 1e-6)`` (1e-12 if ``d_max == 0``)."""
    return d_max * (1.0 + 1e-6) if d_max > 0 else 1e-12


def facility_location_value(embeddings: Tensor, indices: Tensor, *, c: Optional[float] = None) -> float:
    """Facility-location objective ``F(S) = sum_i max_{j in S} (C - ||g_i - g_j||)`` in float64.

    Args:
        embeddings: ``[n, d]`` float tensor.
        indices: positions of the selected rows.
        c: the constant C; default ``similarity_offset(max pairwise distance)``.

    Returns:
        F(S) as a Python float (0 for an empty selection).
    """
    if indices.numel() == 0:
        return 0.0
    x = embeddings.to(torch.float64)
    x = x - x.mean(dim=0)
    if c is None:
        c = similarity_offset(max_pairwise_distance(x))
    centres = x[indices.to(x.device)]
    # explicit differences, not the Gram formula (||x||^2 + ||y||^2 - 2xy): its cancellation
    # error depends on the BLAS kernel, 7e-12 relative on one machine, 1e-13 on another
    nearest = torch.cat([torch.cdist(x[r0 : r0 + 1024], centres, compute_mode="donot_use_mm_for_euclid_dist")
                         .min(dim=1).values for r0 in range(0, x.shape[0], 1024)])
    return float((c - nearest).sum())


def similarity_matrix(embeddings: Tensor) -> Tensor:
    """Dense float similarities ``C - D`` (same C as :func:`facility_location_value`).

    Args:
        embeddings: ``[n, d]`` float tensor.

    Returns:
        ``[n, n]`` float32 similarity matrix (e.g. to feed other solvers).
    """
    x = embeddings.to(torch.float32)
    x = x - x.mean(dim=0)
    c = similarity_offset(max_pairwise_distance(embeddings))
    return torch.cdist(x, x).neg_().add_(c)


def craig(
    embeddings: Tensor,
    budget: int,
    *,
    generator: Optional[torch.Generator] = None,
    mass: Optional[Tensor] = None,
    weighted: bool = False,
) -> tuple[Tensor, Tensor]:
    """CRAIG selector: greedy facility location with coverage weights.

    Args:
        embeddings: ``[n, d]`` float tensor (gradient embeddings of one group).
        budget: number of rows (clipped to ``n``; ``>= n`` returns all, unit weights).
        generator: draws the stochastic greedy's candidates for a group of more than
            :data:`EXACT_LIMIT` rows (none: seed 0); smaller groups run the exact greedy,
            which is deterministic.
        mass: optional per-row example counts; they convert weights to example units, and
            with ``weighted`` they also weight the objective.
        weighted: maximise ``sum_i mass_i max_{j in S} s_ij`` (``mass`` must be integral: a
            row standing for ``mass_i`` examples counts as that many copies of it), as the
            second round of the two-round merge must; else the plain objective.

    Returns:
        ``(indices, weights)``: picks in selection order; weight of a pick is the
        total mass of the rows whose most similar pick it is (ties to the
        earliest pick), so weights sum to the group's total mass (its size).
        Only a pick that duplicates an earlier one (possible once every row is
        covered exactly, e.g. budget > number of distinct rows) can weigh 0.
    """
    check_embeddings(embeddings)
    n = embeddings.shape[0]
    budget = check_budget(budget, n)
    if budget >= n:
        return full(embeddings, mass=mass)
    masses = check_mass(mass, embeddings)
    counts = None
    if weighted:
        counts = masses.round()
        if mass is None or not torch.equal(counts, masses):
            raise ValueError("weighted CRAIG needs integral per-row masses (the examples each row stands for)")
    if n > EXACT_LIMIT:
        from distributed_adcs.coreset.stochastic import stochastic_facility_greedy

        order, assign = stochastic_facility_greedy(embeddings, budget, weights=counts,
                                                   generator=generator or torch.Generator().manual_seed(0))
    else:
        order, assign = facility_location_greedy(embeddings, budget, counts)
    weights = torch.zeros(budget, dtype=torch.float64, device=embeddings.device)
    weights.index_add_(0, assign, masses)
    return order, weights.to(torch.float32)
