"""Tests for the shared PGD loop, the norm geometries and the BatchNorm mode guard."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny_models import make_data, make_model

from distributed_adcs.attacks import GEOMETRIES, L2Geometry, attack, bn_mode

EPS = {"linf": 8 / 255, "l2": 0.5}


def _ce(y: torch.Tensor):
    return lambda logits, _x: F.cross_entropy(logits, y, reduction="none")


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attack_stays_in_ball_and_box(norm: str, seed: int) -> None:
    model = make_model(seed).eval()
    x, y = make_data(12, seed=seed)
    x[:3] = x[:3].round()  # pixels at exactly 0 and 1 exercise the box clamp
    eps = EPS[norm] * (seed + 1)
    g = torch.Generator().manual_seed(seed)
    x_adv = attack(model, x, _ce(y), geometry=norm, epsilon=eps, step_size=eps / 2, steps=5, generator=g)
    assert (_norm(x_adv - x, norm) <= eps + 1e-6).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert not x_adv.requires_grad


def _same_size_noise(x: torch.Tensor, eps: float, norm: str, g: torch.Generator) -> torch.Tensor:
    if norm == "linf":  # a random corner of the cube: same l-inf norm as a full PGD step
        return eps * torch.randint(0, 2, x.shape, generator=g).float().mul(2).sub(1)
    d = torch.randn(x.shape, generator=g)
    return eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_raises_loss_more_than_random_noise(norm: str) -> None:
    model = make_model(3).eval()
    x, y = make_data(32, seed=3)
    eps = EPS[norm]
    g = torch.Generator().manual_seed(0)
    x_adv = attack(model, x, _ce(y), geometry=norm, epsilon=eps, step_size=eps / 4, steps=10, generator=g)
    x_noise = (x + _same_size_noise(x, eps, norm, g)).clamp(0, 1)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
        pgd_gain = F.cross_entropy(model(x_adv), y) - clean
        noise_gain = F.cross_entropy(model(x_noise), y) - clean
    assert pgd_gain > 0
    assert pgd_gain > 3 * noise_gain.abs()


def test_l2_projection_keeps_inside_scales_outside() -> None:
    geo = L2Geometry()
    eps = 1.0
    g = torch.Generator().manual_seed(0)
    d = torch.randn(6, 3, 4, 4, generator=g)
    scales = torch.tensor([0.1, 0.5, 0.99, 1.5, 3.0, 10.0]).view(-1, 1, 1, 1)
    d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * scales
    p = geo.project(d, eps)
    inside = scales.flatten() < eps
    assert torch.equal(p[inside], d[inside])
    out_norms = p[~inside].flatten(1).norm(dim=1)
    assert torch.allclose(out_norms, torch.ones_like(out_norms), atol=1e-6)
    cos = F.cosine_similarity(p[~inside].flatten(1), d[~inside].flatten(1))
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-6)


def test_l2_random_start_is_uniform_in_ball() -> None:
    # In 2 dimensions a uniform point in the disc has P(r < eps/2) = 1/4.
    x = torch.zeros(20000, 1, 1, 2)
    delta = GEOMETRIES["l2"].random_init(x, 2.0, torch.Generator().manual_seed(0))
    r = delta.flatten(1).norm(dim=1)
    assert (r <= 2.0 + 1e-6).all()
    assert abs((r < 1.0).float().mean().item() - 0.25) < 0.02


def test_linf_random_start_and_zero_steps() -> None:
    model = make_model().eval()
    x, y = make_data(8)
    eps = 0.1
    g = torch.Generator().manual_seed(0)
    noise_only = attack(model, x, _ce(y), geometry="linf", epsilon=eps, step_size=0.1, steps=0, generator=g)
    assert not torch.equal(noise_only, x)
    assert ((noise_only - x).abs() <= eps + 1e-6).all()
    none = attack(model, x, _ce(y), geometry="linf", epsilon=eps, step_size=0.1, steps=0, random_start=False)
    assert torch.equal(none, x)


def test_attack_leaves_no_parameter_grads_and_restores_flags() -> None:
    model = make_model()
    model.head.bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    x, y = make_data(8)
    attack(model, x, _ce(y), geometry="l2", epsilon=0.5, step_size=0.2, steps=3)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags


def _bn_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_bn_eval_mode_freezes_running_stats_and_restores_train_mode() -> None:
    model = make_model().train()
    model.block1[1].eval()  # a mixed state must come back exactly
    modes = [m.training for m in model.modules()]
    before = _bn_state(model)
    x, y = make_data(8)
    with bn_mode(model, "eval"):
        assert not any(m.training for m in model.modules())
        attack(model, x, _ce(y), geometry="linf", epsilon=0.03, step_size=0.01, steps=3)
    assert [m.training for m in model.modules()] == modes
    after = _bn_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bn_train_mode_uses_batch_stats_and_restores_eval() -> None:
    model = make_model().eval()
    before = _bn_state(model)
    x, y = make_data(8)
    with bn_mode(model, "train"):
        assert model.training
        attack(model, x, _ce(y), geometry="linf", epsilon=0.03, step_size=0.01, steps=2)
    assert not model.training
    after = _bn_state(model)
    assert not torch.equal(before["block1.1.running_mean"], after["block1.1.running_mean"])


def test_bn_mode_restores_on_error_and_rejects_unknown() -> None:
    model = make_model().train()
    with pytest.raises(RuntimeError):
        with bn_mode(model, "eval"):
            raise RuntimeError("boom")
    assert model.training
    with pytest.raises(ValueError):
        with bn_mode(model, "frozen"):
            pass


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attack_reproducible_with_seeded_generator(norm: str) -> None:
    model = make_model().eval()
    x, y = make_data(8)

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return attack(
            copy.deepcopy(model), x, _ce(y), geometry=norm, epsilon=0.1, step_size=0.03, steps=3, generator=g
        )

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_unknown_geometry_rejected() -> None:
    model = make_model().eval()
    x, y = make_data(2)
    with pytest.raises(ValueError, match="linf"):
        attack(model, x, _ce(y), geometry="l1", epsilon=0.1, step_size=0.1, steps=1)
