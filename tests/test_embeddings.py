"""Closed-form gradient embeddings equal autograd, for every registered objective."""

from __future__ import annotations

import pytest
import torch

from distributed_adcs.embeddings import EMBEDDING_KINDS, embed_batch
from distributed_adcs.models import build_model
from distributed_adcs.config import ObjectiveConfig
from distributed_adcs.objectives import OBJECTIVES, build_objective
from tiny_models import make_data, make_model

EPS = {"pat": 0.5}


def _model():
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28, mean=[0.5], std=[0.25])
    # a few SGD steps so BatchNorm running stats and weights are not at their init
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return model


def _autograd_embedding(model, objective, x, x_adv, y, kind):
    """d loss_i / d (bias, weight) of the head, one example at a time, in eval mode."""
    model.eval()
    rows = []
    for i in range(x.shape[0]):
        model.zero_grad()
        zc = model(x[i:i + 1]) if objective.needs_clean_logits else None
        za = model(x_adv[i:i + 1])
        objective.loss_from_logits(zc, za, y[i:i + 1]).sum().backward()
        gb, gw = model.head.bias.grad.clone(), model.head.weight.grad.clone()
        if kind == "logits":
            rows.append(gb)
        elif kind == "last_layer":
            rows.append(torch.cat([gb, gw.flatten()]))
        else:
            rows.append(torch.cat([gb, gw[y[i]]]))
    model.zero_grad()
    return torch.stack(rows)


@pytest.mark.parametrize("kind", EMBEDDING_KINDS)
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_closed_form_matches_autograd(name, kind):
    model = _model()
    params = OBJECTIVES[name].params(**({"beta": 3.0} if name == "trades" else {}))
    objective = build_objective(ObjectiveConfig(name=name, epsilon=EPS.get(name, 0.1), steps=2, params=params))
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    g = torch.Generator().manual_seed(1)
    emb = embed_batch(model, objective, x, y, kind=kind, generator=g)
    # regenerate the same adversarial example with the same seed for the reference
    x_adv = objective.perturb(model, x, y, generator=torch.Generator().manual_seed(1))
    ref = _autograd_embedding(model, objective, x, x_adv, y, kind)
    assert emb.shape == ref.shape
    torch.testing.assert_close(emb, ref, rtol=1e-4, atol=1e-5)


def test_embedding_uses_the_attacked_view_not_another():
    """The embedding of a view equals the embedding computed from that exact view's attack."""
    model = _model()
    objective = build_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.1, steps=2))
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    flipped = x.flip(-1)
    e1 = embed_batch(model, objective, flipped, y, generator=torch.Generator().manual_seed(0))
    e2 = embed_batch(model, objective, x, y, generator=torch.Generator().manual_seed(0))
    x_adv = objective.perturb(model, flipped, y, generator=torch.Generator().manual_seed(0))
    ref = _autograd_embedding(model, objective, flipped, x_adv, y, "logits")
    torch.testing.assert_close(e1, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(e1, e2)  # a different view gives a different embedding


def test_embedding_is_independent_of_batch_composition():
    model = _model()
    objective = build_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.1, steps=0, random_start=False))
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    whole = embed_batch(model, objective, x, y)
    halves = torch.cat([embed_batch(model, objective, x[:4], y[:4]), embed_batch(model, objective, x[4:], y[4:])])
    torch.testing.assert_close(whole, halves, rtol=1e-5, atol=1e-6)
    assert model.training  # the model's mode is restored


def test_selection_in_train_bn_mode_leaves_the_live_model_unchanged():
    # objective.bn_mode=train runs the selection attack with batch statistics, which updates
    # BatchNorm's running statistics; selection must not change the model that trains next.
    from distributed_adcs.config import load_config
    from distributed_adcs.engine.build import load_job_splits, make_model
    from distributed_adcs.engine.selection import local_selector

    from helpers import TINY

    cfg = load_config("configs/quickstart.yaml", [*TINY, "coreset.method=craig", "objective.bn_mode=train",
                                                  "coreset.warmup_epochs=1", "coreset.selection_steps=2"])
    splits = load_job_splits(cfg)
    torch.manual_seed(0)
    model = make_model(cfg, splits)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    selection = local_selector(cfg, splits, torch.device("cpu"))(model, 1)
    assert selection.positions.numel() == round(0.3 * len(splits.train))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k], after[k])]


def test_selection_attack_reaches_the_ball_with_an_explicit_training_step():
    # objective.step_size 0.01 is right for 10 training steps at epsilon 0.1; a 1-step selection
    # attack with it would move 0.01. It must reach the epsilon-ball instead.
    from distributed_adcs.config import ObjectiveConfig
    from distributed_adcs.engine.build import make_objective

    cfg = ObjectiveConfig(name="pgd_linf", epsilon=0.1, steps=10, step_size=0.01)
    assert make_objective(cfg).step_size == 0.01  # training keeps its step
    select = make_objective(cfg, steps=1)
    assert select.spec.steps == 1 and select.step_size == pytest.approx(0.25)
    model = make_model().eval()
    x, y = make_data(8)
    delta = (select.perturb(model, x, y, torch.Generator().manual_seed(0)) - x).abs()
    inside = (x > 0.1) & (x < 0.9)  # pixels the [0, 1] box does not clip
    assert float(delta[inside].min()) == pytest.approx(0.1, abs=1e-6)
    bigger = make_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.1, steps=10, step_size=0.5), steps=2)
    assert bigger.step_size == 0.5  # a configured step larger than the default is kept
