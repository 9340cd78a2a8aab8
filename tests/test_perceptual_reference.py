"""The perceptual distance and Fast-LPA against a float64 re-derivation from their docstrings.

Reference (``distributed_adcs.attacks.perceptual`` module doc and ``fast_lpa``'s): features are
the hooked layers' activations normalised to unit l2 norm over channels at every position;
``d^2 = sum_l mean_positions sum_c (a_l(x) - a_l(x'))^2``; Fast-LPA ascends
``loss - lam * relu(d - eps)`` along the normalised gradient, each step scaled so that d moves by
``step_size * 0.1 ** (t / steps)`` (rate of change of d from a finite difference of length
``h``), lam at step t of T ``lam * 0.1 ** (1 - t / T)`` (the schedule of Laidlaw et al.'s
``FastLagrangePerceptualAttack``: from lam / 10 up to lam), Gaussian start of std
``init_sigma``, then a bisection back into the ball along the segment from x.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import make_data, make_model
from torch import nn

from distributed_adcs.attacks.perceptual import PerceptualDistance, fast_lpa, project_perceptual


# -- reference ---------------------------------------------------------------------------------

def _normalise(a: torch.Tensor) -> torch.Tensor:
    return a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)


def _ref_run(network: nn.Module, layers: list[nn.Module], x: torch.Tensor):
    acts: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: acts.append(_normalise(out))) for m in layers]
    try:
        out = network(x)
    finally:
        for hd in handles:
            hd.remove()
    return out, acts


def _ref_distance(fa, fb) -> torch.Tensor:
    total = 0
    for a, b in zip(fa, fb):
        sq = (a - b).pow(2).sum(dim=1)
        total = total + (sq.flatten(1).mean(dim=1) if sq.dim() > 1 else sq)
    return torch.where(total > 0, total.clamp_min(1e-20).sqrt(), torch.zeros_like(total))


def _ref_project(network, layers, x, x_adv, eps, steps, fx=None):
    with torch.no_grad():
        fx = _ref_run(network, layers, x)[1] if fx is None else fx
        inside = _ref_distance(fx, _ref_run(network, layers, x_adv)[1]) <= eps
        shape = (-1,) + (1,) * (x.dim() - 1)
        lo, hi, best = torch.zeros(len(x), dtype=x.dtype), torch.ones(len(x), dtype=x.dtype), x.clone()
        for _ in range(steps):
            mid = (lo + hi) / 2
            cand = x + mid.view(shape) * (x_adv - x)
            ok = _ref_distance(fx, _ref_run(network, layers, cand)[1]) <= eps
            best = torch.where(ok.view(shape), cand, best)
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        return torch.where(inside.view(shape), x_adv, best)


def _ref_fast_lpa(model, x, loss_fn, network, layers, *, epsilon, steps, step_size=None, lam=10.0,
                  h=0.1, init_sigma=0.01, bisection_steps=10, seed=0):
    step_size = epsilon if step_size is None else step_size
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
    delta = (x + init_sigma * noise).clamp(0, 1) - x
    with torch.no_grad():
        fx = _ref_run(network, layers, x)[1]
    for t in range(steps):
        penalty = [lam / 10 * (10 ** (1 / steps)) ** i for i in range(steps)][t]  # lam/10, ..., lam * 10**(-1/T)
        target = step_size * 0.1 ** (t / steps)
        delta = delta.detach().requires_grad_(True)
        if network is model:
            logits, feats = _ref_run(network, layers, x + delta)
        else:
            logits, feats = model(x + delta), _ref_run(network, layers, x + delta)[1]
        d = _ref_distance(fx, feats)
        objective = loss_fn(logits, x + delta) - penalty * F.relu(d - epsilon)
        (grad,) = torch.autograd.grad(objective.sum(), delta)
        norm = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        direction = grad / (norm + 1e-12)
        with torch.no_grad():
            probe = _ref_run(network, layers, x + delta + h * direction)[1]
            rate = _ref_distance([f.detach() for f in feats], probe) / h
            scale = target / (rate + 1e-4)
            delta = (x + delta.detach() + direction * scale.view(-1, 1, 1, 1)).clamp(0, 1) - x
    return _ref_project(network, layers, x, x + delta, epsilon, bisection_steps, fx)


def _setup(n: int = 4, seed: int = 0):
    model = make_model(seed).double().eval()
    x, y = make_data(n, seed=seed)
    x = x.double()

    def loss_fn(logits, x_adv):  # depends on the image too, as a loss_fn may
        return F.cross_entropy(logits, y, reduction="none") + 0.3 * x_adv.flatten(1).mean(1)

    return model, x, loss_fn


# -- the distance ------------------------------------------------------------------------------

def test_distance_by_hand_on_4d_3d_and_2d_activations() -> None:
    net = nn.Sequential(nn.Identity(), nn.Flatten(2), nn.Flatten())
    dist = PerceptualDistance(net, list(net))
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 2, 5, generator=g, dtype=torch.float64)
    b = torch.randn(3, 4, 2, 5, generator=g, dtype=torch.float64)

    def by_hand(u: np.ndarray, v: np.ndarray) -> float:
        def unit(t, axis):
            return t / (np.sqrt((t * t).sum(axis=axis, keepdims=True)) + 1e-10)
        total = ((unit(u, 0) - unit(v, 0)) ** 2).sum(0).mean()  # [C, H, W]: channels, then positions
        total += ((unit(u, 0) - unit(v, 0)) ** 2).sum(0).mean()  # [C, H*W]: the same positions
        uf, vf = u.reshape(-1), v.reshape(-1)
        total += ((unit(uf, 0) - unit(vf, 0)) ** 2).sum()  # [C*H*W]: one position
        return float(np.sqrt(total))

    got = dist(a, b)
    assert got.shape == (3,)
    want = [by_hand(a[i].numpy(), b[i].numpy()) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    assert torch.equal(dist(a, a), torch.zeros(3, dtype=torch.float64))


def test_distance_of_tiny_feature_differences_is_exact() -> None:
    fa = [torch.zeros(2, 3, dtype=torch.float64)]
    fb = [torch.tensor([[1e-6, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)]
    d = PerceptualDistance.distance_from_features(fa, fb)
    assert d.tolist() == [pytest.approx(1e-6, rel=1e-12), 0.0]


def test_distance_rejects_feature_lists_of_different_lengths() -> None:
    f = [torch.zeros(2, 3)]
    with pytest.raises(ValueError):
        PerceptualDistance.distance_from_features(f + f, f)


def test_distance_construction_and_hook_errors() -> None:
    with pytest.raises(ValueError, match="^a perceptual distance needs at least one layer$"):
        PerceptualDistance(nn.Identity(), [])
    unused = nn.ReLU()
    dist = PerceptualDistance(nn.Sequential(nn.Identity()), [unused])
    with pytest.raises(RuntimeError, match="^expected 1 hooked activations, got 0$"):
        dist.features(torch.zeros(1, 2))


def test_to_moves_an_external_network() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    dist = PerceptualDistance(net, [net[1]])
    assert dist.to(torch.device("meta")) is dist
    assert all(p.device.type == "meta" for p in net.parameters())


# -- the projection ----------------------------------------------------------------------------

def test_project_perceptual_matches_the_reference_bisection() -> None:
    model, x, _ = _setup(6)
    dist = PerceptualDistance.from_model(model)
    x_adv = (x + 0.4 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)).clamp(0, 1)
    with torch.no_grad():
        d = dist(x, x_adv)
    eps = float(d.median())  # some examples inside, some outside
    layers = model.perceptual_modules()
    for steps in (10, 3):
        got = project_perceptual(dist, x, x_adv, eps) if steps == 10 else project_perceptual(dist, x, x_adv, eps, bisection_steps=3)
        torch.testing.assert_close(got, _ref_project(model, layers, x, x_adv, eps, steps), rtol=0, atol=1e-12)
        inside = d <= eps
        assert torch.equal(got[inside], x_adv[inside]) and not torch.equal(got[~inside], x_adv[~inside])
    with torch.no_grad():
        assert bool((dist(x, project_perceptual(dist, x, x_adv, eps)) <= eps).all())


def test_project_perceptual_boundaries_count_as_inside() -> None:
    model, x, _ = _setup(1)
    dist = PerceptualDistance.from_model(model)
    x_adv = (x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)).clamp(0, 1)
    with torch.no_grad():
        on_the_sphere = float(dist(x, x_adv))
        assert torch.equal(project_perceptual(dist, x, x_adv, on_the_sphere), x_adv)
        half = x + torch.full((1,), 0.5, dtype=x.dtype).view(-1, 1, 1, 1) * (x_adv - x)
        eps = float(dist(x, half))
        assert eps < on_the_sphere
        assert torch.equal(project_perceptual(dist, x, x_adv, eps, bisection_steps=6), half)


# -- Fast-LPA ----------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, eps, kwargs", [
    (5, 0.08, {}),
    (1, 0.004, {}),  # a ball smaller than the random start: the penalty acts from the first step
    (2, 0.004, {}),
    (3, 0.08, dict(step_size=0.03, lam=4.0, h=0.05, init_sigma=0.02, bisection_steps=4)),
])
def test_fast_lpa_matches_the_reference(steps: int, eps: float, kwargs: dict) -> None:
    model, x, loss_fn = _setup()
    dist = PerceptualDistance.from_model(model)
    if eps < 0.01:
        start = (x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)).clamp(0, 1)
        with torch.no_grad():
            assert bool((dist(x, start) > eps).all())
    got = fast_lpa(model, x, loss_fn, dist, epsilon=eps, steps=steps, generator=torch.Generator().manual_seed(0), **kwargs)
    want = _ref_fast_lpa(model, x, loss_fn, model, model.perceptual_modules(), epsilon=eps, steps=steps, **kwargs)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert not got.requires_grad and float(got.min()) >= 0 and float(got.max()) <= 1
    with torch.no_grad():
        assert bool((dist(x, got) <= eps).all())


def test_fast_lpa_with_an_external_feature_network() -> None:
    model, x, loss_fn = _setup()
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1)).double()
    layers = [net[1], net[2]]
    dist = PerceptualDistance(net, layers)
    frozen_seen = []

    def spy(logits, x_adv):
        frozen_seen.append(not any(p.requires_grad for p in [*model.parameters(), *net.parameters()]))
        return loss_fn(logits, x_adv)

    got = fast_lpa(model, x, spy, dist, epsilon=0.1, steps=3, generator=torch.Generator().manual_seed(0))
    want = _ref_fast_lpa(model, x, loss_fn, net, layers, epsilon=0.1, steps=3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert frozen_seen == [True] * 3  # parameters frozen during the attack ...
    assert all(p.requires_grad for p in [*model.parameters(), *net.parameters()])  # ... and restored
    assert all(p.grad is None for p in [*model.parameters(), *net.parameters()])


def test_fast_lpa_freezes_the_model_and_runs_one_forward_per_pass() -> None:
    model, x, loss_fn = _setup()
    dist = PerceptualDistance.from_model(model)
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    frozen_seen = []

    def spy(logits, x_adv):
        frozen_seen.append(not any(p.requires_grad for p in model.parameters()))
        return loss_fn(logits, x_adv)

    steps, bisection = 4, 5
    fast_lpa(model, x, spy, dist, epsilon=0.08, steps=steps, bisection_steps=bisection,
             generator=torch.Generator().manual_seed(0))
    assert frozen_seen == [True] * steps
    assert all(p.requires_grad for p in model.parameters())
    # clean features once; per step one shared forward (logits and features) and one probe;
    # the projection reuses the clean features: one forward for x_adv and one per bisection step
    assert len(calls) == 1 + 2 * steps + 1 + bisection
    calls.clear()
    with torch.no_grad():
        fx = dist.features(x)
    calls.clear()
    project_perceptual(dist, x, x.flip(0), 0.05, bisection_steps=3, features_x=fx)
    assert len(calls) == 1 + 3
