"""Tests for the training objectives, their closed-form logit gradients and the perceptual distance."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from tiny_models import make_data, make_model

from distributed_adcs.attacks import PerceptualDistance, fast_lpa, load_backbone
from distributed_adcs.config import ObjectiveConfig
from distributed_adcs.objectives import OBJECTIVES, build_objective
from distributed_adcs.objectives.base import cross_entropy_attack_loss, margin_attack_loss
from distributed_adcs.specs.objectives import PatParams

# A budget per registry norm (so a new entry needs no line here): pixel units for l-inf and l2,
# LPIPS units (self features) for pat.
EPSILON = {"linf": 8 / 255, "l2": 0.5, "lpips": 0.5}


def _spec(name: str, steps: int = 3, **params: object) -> ObjectiveConfig:
    """``params``: the entry's own (trades: beta; pat: lam, lpips_weights)."""
    return ObjectiveConfig(name=name, epsilon=EPSILON[OBJECTIVES[name].norm], steps=steps,
                           params=OBJECTIVES[name].params(**params))


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_update_loss_shape_and_train_mode(name: str) -> None:
    model = make_model().eval()
    x, y = make_data(6)
    obj = build_objective(_spec(name))
    x_adv = obj.perturb(model, x, y, torch.Generator().manual_seed(0))  # as engine/epoch.py trains
    loss, _ = obj.update_loss(model, x, x_adv, y)
    assert loss.shape == (6,) and torch.isfinite(loss).all()
    assert loss.requires_grad  # attached to the graph for the trainer's backward
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_perturb_restores_previous_mode(name: str) -> None:
    model = make_model().train()
    x, y = make_data(4)
    build_objective(_spec(name)).perturb(model, x, y)
    assert model.training


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_closed_form_logit_grads_match_autograd(name: str) -> None:
    obj = build_objective(_spec(name, **({"beta": 2.5} if name == "trades" else {})))
    g = torch.Generator().manual_seed(1)
    logits_clean = (3 * torch.randn(7, 10, generator=g, dtype=torch.float64)).requires_grad_(True)
    logits_adv = (3 * torch.randn(7, 10, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, 10, (7,), generator=g)
    clean_in = logits_clean if obj.needs_clean_logits else None
    # Summing is fine: example i's loss depends only on row i of the logits.
    loss = obj.loss_from_logits(clean_in, logits_adv, y).sum()
    auto_clean, auto_adv = torch.autograd.grad(loss, [logits_clean, logits_adv], allow_unused=True)
    grad_clean, grad_adv = obj.logit_grads(clean_in, logits_adv, y)
    torch.testing.assert_close(grad_adv, auto_adv, rtol=1e-9, atol=1e-12)
    if obj.needs_clean_logits:
        torch.testing.assert_close(grad_clean, auto_clean, rtol=1e-9, atol=1e-12)
    else:
        assert grad_clean is None and auto_clean is None


def _trades_by_hand(model: torch.nn.Module, x, x_adv, y, beta: float) -> torch.Tensor:
    """CE(f(x), y) + beta * sum_k p_k(x) log(p_k(x) / p_k(x_adv)) with batch-stat BN."""
    m = copy.deepcopy(model).train()
    p_clean = torch.softmax(m(x), dim=1)
    p_adv = torch.softmax(m(x_adv), dim=1)
    ce = -torch.log(p_clean.gather(1, y[:, None])).squeeze(1)
    kl = (p_clean * (torch.log(p_clean) - torch.log(p_adv))).sum(1)
    return ce + beta * kl


@pytest.mark.parametrize("beta", [6.0, 0.0])
def test_trades_loss_matches_hand_computation(beta: float) -> None:
    model = make_model().train()
    x, y = make_data(8)
    obj = build_objective(_spec("trades", beta=beta))
    x_adv = obj.perturb(model, x, y, torch.Generator().manual_seed(0))
    loss, _ = obj.update_loss(model, x, x_adv, y)
    with torch.no_grad():
        expected = _trades_by_hand(model, x, x_adv, y, beta)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    if beta == 0.0:
        with torch.no_grad():
            clean_ce = F.cross_entropy(copy.deepcopy(model).train()(x), y, reduction="none")
        torch.testing.assert_close(loss.detach(), clean_ce, rtol=1e-5, atol=1e-6)
    else:
        assert (loss.detach() > F.cross_entropy(copy.deepcopy(model).train()(x), y, reduction="none")).any()


def test_trades_training_step_uses_batch_statistics() -> None:
    # The reference implementation left the model in eval mode for the loss forward, so BN
    # normalised with frozen running statistics. Here the training loop's own step
    # (engine.epoch.train_epoch, the code every job runs) must use batch statistics and
    # update the running ones.
    from distributed_adcs.config import TrainConfig
    from distributed_adcs.data.batches import Batch
    from distributed_adcs.engine.epoch import train_epoch
    from distributed_adcs.engine.schedule import EpochSchedule

    model = make_model().eval()
    x, y = make_data(8)
    obj = build_objective(_spec("trades"))
    twin = copy.deepcopy(model)
    x_adv = obj.perturb(twin, x, y, torch.Generator().manual_seed(0))  # the loop's attack, replayed
    with torch.no_grad():
        train_loss = _trades_by_hand(twin, x, x_adv, y, obj.spec.params.beta).mean()
        frozen_bn = copy.deepcopy(model).eval()
        eval_loss = obj.loss_from_logits(frozen_bn(x), frozen_bn(x_adv), y).mean()
    assert abs(float(train_loss - eval_loss)) > 1e-3  # the two modes are distinguishable here
    running_before = model.block1[1].running_mean.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batch = Batch(x=x, y=y, index=torch.arange(8), position=torch.arange(8), weight=torch.ones(8))
    stats = train_epoch(model, obj, [batch], opt, EpochSchedule(opt, TrainConfig(schedule="constant", lr=0.01)), 0, 1,
                        generator=torch.Generator().manual_seed(0))
    assert model.training
    assert not torch.equal(model.block1[1].running_mean, running_before)
    assert stats.loss == pytest.approx(float(train_loss), rel=1e-5)


def test_trades_attack_increases_kl_within_ball() -> None:
    model = make_model().eval()
    x, y = make_data(16)
    obj = build_objective(_spec("trades", steps=5))
    x_adv = obj.perturb(model, x, y, torch.Generator().manual_seed(0))
    assert ((x_adv - x).abs() <= obj.spec.epsilon + 1e-6).all()
    with torch.no_grad():
        lp_c, lp_a = F.log_softmax(model(x), 1), F.log_softmax(model(x_adv), 1)
        kl = (lp_c.exp() * (lp_c - lp_a)).sum(1)
    assert kl.mean() > 1e-4


def test_fgsm_rs_delta_within_eps_and_default_alpha() -> None:
    model = make_model().eval()
    x, y = make_data(16)
    x[:4] = x[:4].round()
    obj = build_objective(_spec("fgsm_rs", steps=50))
    assert obj.step_size == pytest.approx(1.25 * obj.spec.epsilon)
    x_adv = obj.perturb(model, x, y, torch.Generator().manual_seed(0))
    assert ((x_adv - x).abs() <= obj.spec.epsilon + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # alpha > eps: after one step most coordinates sit on the boundary.
    on_boundary = ((x_adv - x).abs() > obj.spec.epsilon - 1e-6).float().mean()
    assert on_boundary > 0.3


def test_pgd_default_step_size_and_with_attack() -> None:
    obj = build_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.03, steps=10))
    assert obj.step_size == pytest.approx(2.5 * 0.03 / 10)
    cheap = obj.with_attack(steps=2)
    assert type(cheap) is type(obj) and cheap.spec.steps == 2
    assert cheap.step_size == pytest.approx(2.5 * 0.03 / 2)  # default follows the new steps
    for field in ("name", "epsilon", "step_size", "random_start", "bn_mode", "params"):
        assert getattr(cheap.spec, field) == getattr(obj.spec, field)
    assert obj.spec.steps == 10  # the original is untouched
    assert obj.with_attack(step_size=0.5).step_size == 0.5


def test_unknown_objective_lists_names() -> None:
    with pytest.raises(ValueError, match="pgd_linf"):
        build_objective(ObjectiveConfig(name="nope", epsilon=0.1))


def test_self_perceptual_distance_properties() -> None:
    model = make_model().eval()
    dist = PerceptualDistance.from_model(model)
    x, _ = make_data(8)
    x2 = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    with torch.no_grad():
        d_same, d_12, d_21 = dist(x, x), dist(x, x2), dist(x2, x)
    assert torch.equal(d_same, torch.zeros(8))
    torch.testing.assert_close(d_12, d_21)
    assert (d_12 > 0).all()


def test_pat_example_within_perceptual_ball_and_raises_loss() -> None:
    model = make_model().train()
    x, y = make_data(16)
    obj = build_objective(_spec("pat", steps=8))
    x_adv = obj.perturb(model, x, y, torch.Generator().manual_seed(0))
    assert model.training
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    model.eval()  # bn_mode "eval": the distance was measured with running statistics
    with torch.no_grad():
        d = PerceptualDistance.from_model(model)(x, x_adv)
        gain = F.cross_entropy(model(x_adv), y, reduction="none")
        gain -= F.cross_entropy(model(x), y, reduction="none")
    assert (d <= obj.spec.epsilon + 1e-5).all()
    assert d.mean() > 0.5 * obj.spec.epsilon  # the attack actually used its budget
    assert gain.mean() > 0 and (gain > 0).float().mean() > 0.8


def test_margin_attack_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 5.0, -1.0], [0.5, 0.1, 0.3], [-3.0, -2.0, -7.0]])
    y = torch.tensor([1, 0, 2])
    got = margin_attack_loss(y)(logits, torch.zeros(3))
    torch.testing.assert_close(got, torch.tensor([2.0 - 5.0, 0.3 - 0.5, -2.0 + 7.0]))


def test_pat_attacks_the_margin_with_the_papers_lambda() -> None:
    # Laidlaw et al.'s training attack: margin loss (kappa = inf), lam 10 (grown from 1), step = eps
    assert PatParams().lam == 10.0
    model = make_model().eval()
    x, y = make_data(8)
    spec = _spec("pat", steps=4, lam=3.0)
    got = build_objective(spec).perturb(model, x, y, torch.Generator().manual_seed(0))
    model.eval()
    want = fast_lpa(model, x, margin_attack_loss(y), PerceptualDistance.from_model(model), epsilon=spec.epsilon,
                    steps=4, step_size=spec.epsilon, lam=3.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    ce = fast_lpa(model, x, cross_entropy_attack_loss(y), PerceptualDistance.from_model(model),
                  epsilon=spec.epsilon, steps=4, lam=3.0, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(got, ce)  # the loss is what decides, so the check above can fail


def test_pat_with_external_backbone_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "alexnet_features.pt"
    torch.save(torchvision.models.alexnet(weights=None).features.state_dict(), path)
    model = make_model().eval()
    x, y = make_data(4, size=32)
    spec = ObjectiveConfig(name="pat", epsilon=0.2, steps=3, params=PatParams(lpips_weights=str(path)))
    obj = build_objective(spec)
    x_adv = obj.perturb(model, x, y, torch.Generator().manual_seed(0))
    backbone = load_backbone(path)
    dist = PerceptualDistance(backbone, backbone.perceptual_modules())
    with torch.no_grad():
        d = dist(x, x_adv)
        assert torch.equal(dist(x, x), torch.zeros(4))
    assert (d <= 0.2 + 1e-5).all() and (d > 0).all()


def test_backbone_rejects_unknown_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(ValueError, match="alexnet"):
        load_backbone(path)
