"""GradMatch against an independent float64 numpy reference of the documented algorithm.

The reference (``_ref_refit``, ``_ref_pursuit``) is written from the module docstring of
``distributed_adcs.coreset.gradmatch``: textbook OMP (pick the untried row of largest cosine
with the residual), a ridge least-squares re-fit on the support, and, when that is not
positive, one warm-started active-set pass that moves from the previous weights towards the
support's ridge solution, stops where a weight reaches zero and drops it for good.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distributed_adcs.coreset import select
from distributed_adcs.coreset.gradmatch import _grow_cholesky, _Pursuit, _refit, gradmatch, matching_pursuit
from distributed_adcs.coreset.types import seeded_generator


# -- the reference -----------------------------------------------------------------------------

def _ref_refit(gram: np.ndarray, rhs: np.ndarray, w: np.ndarray, lam: float, stats: dict | None = None) -> np.ndarray:
    """min_{v >= 0} v'(G + lam I)v / 2 - rhs'v, one active-set pass warm-started at ``w``."""
    k = len(w)
    h = gram + lam * np.eye(k)
    w = w.astype(np.float64).copy()
    active = np.ones(k, dtype=bool)
    for _ in range(k + 1):
        idx = np.flatnonzero(active)
        z = np.zeros(k)
        if idx.size == 0:
            return z
        z[idx] = np.linalg.solve(h[np.ix_(idx, idx)], rhs[idx])
        neg = active & (z <= 0)
        if not neg.any():
            return z
        if stats is not None:
            stats["drops"] = stats.get("drops", 0) + 1
        ratio = np.full(k, np.inf)
        for i in np.flatnonzero(neg):
            ratio[i] = w[i] / (w[i] - z[i]) if w[i] - z[i] > 0 else 0.0
        alpha = min(max(ratio.min(), 0.0), 1.0)
        w = np.maximum(w + alpha * (z - w), 0.0)
        active &= ~(ratio <= alpha)
        w[~active] = 0.0
    return w


def _ref_pursuit(x: torch.Tensor, budget: int, mass: torch.Tensor | None, ridge: float) -> tuple[list[int], np.ndarray]:
    g = x.double().numpy()
    m = np.ones(len(g)) if mass is None else mass.double().numpy()
    b = m @ g
    lam = ridge * float((g * g).sum(1).mean())
    norms = np.maximum(np.linalg.norm(g, axis=1), 1e-300)
    support: list[int] = []
    w = np.zeros(0)
    tried = np.zeros(len(g), dtype=bool)
    r = b
    for _ in range(2 * budget + 10):
        if len(support) >= budget or np.linalg.norm(r) <= 1e-9 * np.linalg.norm(b):
            break
        corr = g @ r
        corr[tried] = -np.inf
        j = int(np.argmax(corr / norms))
        if not corr[j] > 1e-12 * np.linalg.norm(r) * norms[j]:
            break
        tried[j] = True
        s = support + [j]
        a = g[s]
        gram, rhs = a @ a.T, a @ b
        z = np.linalg.solve(gram + lam * np.eye(len(s)), rhs)
        if (z > 0).all():
            support, w = s, z
        else:
            v = _ref_refit(gram, rhs, np.concatenate([w, [0.0]]), lam)
            support, w = [s[i] for i in np.flatnonzero(v > 0)], v[v > 0]
        r = b - w @ g[support]
    return support, w


def _refit_problem(rng: np.random.Generator, k: int, scale: float):
    a = rng.standard_normal((k, k + 2)) * rng.uniform(0.3, 3.0, size=(k, 1))
    gram = a @ a.T
    w_true = rng.standard_normal(k)  # mixed signs: the unconstrained fit leaves the orthant
    rhs = (gram @ w_true + 0.1 * rng.standard_normal(k)) * scale
    w0 = np.abs(rng.standard_normal(k)) * scale
    w0[rng.random(k) < 0.3] = 0.0
    return gram, rhs, w0


# -- _refit ------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_refit_matches_the_active_set_reference(scale: float) -> None:
    rng = np.random.default_rng(int(scale * 1000) % 97)
    stats: dict = {}
    multi = 0
    for case in range(60):
        k = 1 + case % 6
        gram, rhs, w0 = _refit_problem(rng, k, scale)
        lam = 0.1  # not a float32 number: the ridge must enter the Hessian in float64
        local: dict = {}
        want = _ref_refit(gram, rhs, w0, lam, local)
        multi += local.get("drops", 0) >= 2
        stats["drops"] = stats.get("drops", 0) + local.get("drops", 0)
        got = _refit(torch.from_numpy(gram), torch.from_numpy(rhs), torch.from_numpy(w0), lam)
        assert got.dtype == torch.float64 and bool((got >= 0).all())
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12 * scale)
        h = gram + lam * np.eye(k)
        J = lambda v: 0.5 * v @ h @ v - rhs @ v  # noqa: E731
        assert J(got.numpy()) <= J(w0) + 1e-12 * abs(J(w0)) + 1e-300  # the objective never rises
    assert multi >= 5, "the cases must exercise several drop rounds"


def test_refit_single_atom_and_exhausted_support() -> None:
    gram = torch.tensor([[4.0]], dtype=torch.float64)
    # one positive atom from a zero start: its ridge solution
    got = _refit(gram, torch.tensor([2.0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64), 1.0)
    torch.testing.assert_close(got, torch.tensor([0.4], dtype=torch.float64), rtol=1e-15, atol=0)
    # negatively correlated atom: dropped (weight 0)
    got = _refit(gram, torch.tensor([-2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64), 1.0)
    assert got.tolist() == [0.0]
    # two atoms, the second negatively correlated: the first keeps exactly its solo solution
    gram2 = torch.tensor([[4.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    got = _refit(gram2, torch.tensor([3.0, -3.0], dtype=torch.float64), torch.tensor([0.5, 0.0], dtype=torch.float64), 1.0)
    torch.testing.assert_close(got, torch.tensor([0.6, 0.0], dtype=torch.float64), rtol=1e-14, atol=0)


# -- _grow_cholesky ----------------------------------------------------------------------------

def test_grow_cholesky_extends_the_factor_row_by_row() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 9, generator=g, dtype=torch.float64)
    h = a @ a.T + 0.25 * torch.eye(6, dtype=torch.float64)
    chol = torch.full((7, 7), float("nan"), dtype=torch.float64)
    for k in range(6):
        assert _grow_cholesky(chol, k, h[k, :k].clone(), float(h[k, k])) is True
        factor = chol[: k + 1, : k + 1]
        assert torch.equal(torch.triu(factor, 1), torch.zeros_like(factor))  # lower triangular, upper zeroed
        torch.testing.assert_close(factor @ factor.T, h[: k + 1, : k + 1], rtol=1e-12, atol=1e-12)


def test_grow_cholesky_refuses_unsafe_pivots() -> None:
    chol = torch.zeros(3, 3, dtype=torch.float64)
    assert _grow_cholesky(chol, 0, torch.zeros(0, dtype=torch.float64), 0.0) is False  # a zero row
    chol[0, 0] = 1000.0  # H = [[1e6]]
    # a new row equal to the first up to 1e-8 in 1e6: pivot ~1e-8, below 1e-12 * diag
    assert _grow_cholesky(chol, 1, torch.tensor([1e6], dtype=torch.float64), 1e6 + 1e-8) is False
    # an exact duplicate row
    assert _grow_cholesky(chol, 1, torch.tensor([1e6], dtype=torch.float64), 1e6) is False
    # a well separated one is accepted
    assert _grow_cholesky(chol, 1, torch.tensor([1e3], dtype=torch.float64), 1e6) is True
    assert chol[1, 1] == pytest.approx((1e6 - 1.0) ** 0.5, rel=1e-14)


# -- _Pursuit: the state it documents ---------------------------------------------------------

def test_pursuit_state_stays_consistent_through_drops() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    target = x[:5].sum(0) - 2.0 * x[5]  # needs a negative part: the re-fit drops atoms
    lam = 0.3  # a float64 ridge of its own (not a float32 number)
    state = _Pursuit(x, target, lam, 12)
    dropped = 0
    for j in [5, 0, 1, 2, 3, 4, 7, 9, 11, 13]:
        before = state.k
        state.add(j)
        dropped += state.k < before + 1
        k = state.k
        sup = state.support[:k]
        assert torch.equal(state.atoms[:k], x[sup])
        torch.testing.assert_close(state.gram[:k, :k], x[sup] @ x[sup].T, rtol=1e-13, atol=1e-13)
        assert state.chol_ok is True
        chol = state.chol[:k, :k].tril()
        h = x[sup] @ x[sup].T + lam * torch.eye(k, dtype=torch.float64)
        torch.testing.assert_close(chol @ chol.T, h, rtol=1e-12, atol=1e-12)
        assert state.w.shape == (k,) and bool((state.w > 0).all())
        torch.testing.assert_close(state.residual(), target - state.w @ x[sup], rtol=0, atol=1e-12)
    assert dropped > 0, "the sequence must exercise the drop path"


# -- matching_pursuit / gradmatch against the reference ----------------------------------------

def _cases():
    g = torch.Generator().manual_seed(21)
    norms = torch.rand(50, 1, generator=g) * 5 + 0.05  # very different row norms: cosine, not correlation
    yield torch.randn(50, 8, generator=g) * norms + 0.3, None, 12, 1e-6
    yield torch.randn(50, 8, generator=g) * norms + 0.3, None, 12, 0.1
    yield torch.randn(60, 4, generator=g) + torch.tensor([1.0, -0.5, 0.2, 0.0]), None, 15, 0.05
    m = torch.randint(1, 6, (50,), generator=g).double()
    yield torch.randn(50, 8, generator=g) * norms - 0.2, m, 10, 1e-6
    yield torch.randn(50, 8, generator=g) * norms - 0.2, m, 10, 0.2


@pytest.mark.parametrize("case", range(5))
def test_matching_pursuit_matches_the_reference(case: int) -> None:
    x, mass, budget, ridge = list(_cases())[case]
    want_s, want_w = _ref_pursuit(x, budget, mass, ridge)
    support, w = matching_pursuit(x, budget, mass=mass, ridge=ridge)
    assert support.tolist() == want_s
    np.testing.assert_allclose(w.numpy(), want_w, rtol=1e-8, atol=0)


def test_reference_cases_depend_on_the_cosine_choice() -> None:
    # Not vacuous: choosing by raw correlation instead of cosine would pick differently.
    differs = False
    for x, mass, budget, ridge in _cases():
        s, _ = _ref_pursuit(x, budget, mass, ridge)
        g = x.double()
        m = torch.ones(len(g), dtype=torch.float64) if mass is None else mass
        first_by_corr = int(torch.argmax(g @ (m @ g)))
        differs = differs or first_by_corr != s[0]
    assert differs


def test_gradmatch_weights_with_mass_and_shortfall_fill() -> None:
    # d = 2 and a negligible ridge: the pursuit matches b with 2 rows and stops; the other
    # rows are the seeded fill, each weighted by its own mass.
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 2, generator=g) + torch.tensor([2.0, 1.0])
    mass = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0, 2.0])
    want_s, want_w = _ref_pursuit(x, 5, mass, 1e-12)
    assert len(want_s) == 2
    fills = set()
    for seed in range(12):
        idx, w = gradmatch(x, 5, generator=torch.Generator().manual_seed(seed), mass=mass, ridge=1e-12)
        assert w.dtype == torch.float32 and idx.dtype == torch.int64
        assert idx[:2].tolist() == want_s
        np.testing.assert_allclose(w[:2].double().numpy(), want_w, rtol=1e-6)
        fill = idx[2:].tolist()
        assert len(fill) == 3 and len(set(fill)) == 3 and not set(fill) & set(want_s)
        assert w[2:].tolist() == mass[idx[2:]].tolist()
        fills.add(tuple(fill))
    assert len(fills) > 1  # the fill is random
    # a shortfall of exactly one row is filled too
    idx, w = gradmatch(x, 3, generator=torch.Generator().manual_seed(0), mass=mass, ridge=1e-12)
    assert idx.numel() == 3 and idx[:2].tolist() == want_s and float(w[2]) == float(mass[idx[2]])
    # with the default ridge the pursuit keeps spreading weight instead of stopping at 2
    idx, _ = gradmatch(x, 5, generator=torch.Generator().manual_seed(0), mass=mass)
    want_default, _ = _ref_pursuit(x, 5, mass, 1e-6)
    assert len(want_default) > 2 and idx[: len(want_default)].tolist() == want_default


@pytest.mark.parametrize("exponent", [-26, -13, 13])
def test_gradmatch_is_exactly_scale_free(exponent: int) -> None:
    # Rescaling by a power of two is exact in floating point, so every decision (stopping rule,
    # correlation threshold, ridge) must come out the same: same rows, same weights.
    g = torch.Generator().manual_seed(8)
    cases = [(torch.randn(30, 2, generator=g) + torch.tensor([1.5, 0.5]), 6, 1e-12),
             (torch.randn(40, 5, generator=g) + 0.2, 8, 1e-6),
             (torch.cat([torch.tensor([1.0, 2.0, 3.0]) * torch.tensor([[9.0], [10.0], [11.0]]),
                         -0.5 * torch.tensor([1.0, 2.0, 3.0]).expand(20, 3)]), 8, 1e-6)]
    for x, budget, ridge in cases:
        base = gradmatch(x, budget, generator=torch.Generator().manual_seed(1), ridge=ridge)
        scaled = gradmatch(x * 2.0**exponent, budget, generator=torch.Generator().manual_seed(1), ridge=ridge)
        assert torch.equal(base[0], scaled[0])
        torch.testing.assert_close(base[1], scaled[1], rtol=1e-6, atol=0)
    # the first case does stop early (a shortfall), so the stopping rule is exercised
    x, budget, ridge = cases[0]
    assert len(_ref_pursuit(x, budget, None, ridge)[0]) < budget


def test_a_group_without_shortfall_draws_no_randomness() -> None:
    # select() shares one generator across classes: a class whose pursuit fills its budget must
    # not consume random numbers, or the next class's fill would depend on it.
    g = torch.Generator().manual_seed(2)
    rich = torch.randn(30, 12, generator=g) + 0.1  # budget 4 < d: no shortfall
    v = torch.tensor([1.0, 2.0, 3.0])
    poor = torch.cat([v * torch.tensor([[9.0], [10.0], [11.0]]), -0.5 * v.expand(20, 3)])
    poor = torch.cat([poor, torch.zeros(23, 9)], dim=1)
    x = torch.cat([rich, poor])
    labels = torch.cat([torch.zeros(30, dtype=torch.int64), torch.ones(23, dtype=torch.int64)])
    alone_rich, _ = gradmatch(rich, 4, generator=torch.Generator().manual_seed(0))
    assert alone_rich.numel() == 4
    gen = seeded_generator(0)
    state = gen.get_state()
    gradmatch(rich, 4, generator=gen)
    assert torch.equal(gen.get_state(), state)
    for seed in range(4):
        core = select("gradmatch", x, labels, 12, seed=seed)
        share_poor = int((labels[core.indices] == 1).sum())
        local, w = gradmatch(poor, share_poor, generator=seeded_generator(seed))
        assert local.numel() > 3  # a shortfall was filled
        assert sorted((30 + local).tolist()) == core.indices[labels[core.indices] == 1].tolist()
