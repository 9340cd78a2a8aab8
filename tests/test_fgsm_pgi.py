"""FGSM-PGI (objectives/fgsm_pgi.py): the step, the prior and momentum updates and the loss against
a hand computation of the authors' recipe; the consistency term's switch; its cost in passes;
the reset every R epochs; its config."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny_models import make_data, make_model

from distributed_adcs.config import ConfigError, ObjectiveConfig, TrainConfig, load_config
from distributed_adcs.data.batches import Batch
from distributed_adcs.engine.ledger import BatchLedger, Ledger
from distributed_adcs.engine.runtime import generator
from distributed_adcs.objectives import build_objective
from distributed_adcs.objectives.fgsm_pgi import MOMENTUM, PRIOR
from distributed_adcs.specs.objectives import FGSMPGIParams

EPS = 8 / 255


def _pgi(**params: object):
    return build_objective(ObjectiveConfig(name="fgsm_pgi", epsilon=EPS, params=FGSMPGIParams(**params)))


def _setup(n: int = 8, seed: int = 0):
    x, y = make_data(n, seed=seed)
    batch = Batch(x=x, y=y, index=torch.arange(100, 100 + n), position=torch.arange(n), weight=torch.ones(n))
    ledger = Ledger(batch.index, tuple(x.shape[1:]))
    return batch, ledger


def _smoothed_ce(logits, y):
    target = torch.full_like(logits, 0.4 / 9).scatter_(1, y[:, None], 0.6)  # the authors' factor 0.6
    return -(target * F.log_softmax(logits, dim=1)).sum(1)


def _project(d, x):
    return torch.minimum(torch.maximum(d.clamp(-EPS, EPS), -x), 1 - x)


def test_one_step_prior_and_momentum_by_hand():
    model, obj = make_model(), _pgi()
    batch, ledger = _setup()
    obj.prepare_ledger(ledger, 0, generator(0, "ledger", 0))
    prior0 = ledger.fields[PRIOR].clone()
    assert torch.allclose(prior0.abs(), torch.full_like(prior0, EPS)) and (prior0 > 0).any() and (prior0 < 0).any()
    assert ledger.fields[MOMENTUM].abs().sum() == 0
    x, y = batch.x, batch.y
    momentum = torch.zeros_like(x)
    prior = prior0
    for visit in range(2):  # the second visit starts from the first's prior and momentum
        p = (x + prior).clamp(0, 1) - x
        d = p.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_smoothed_ce(copy.deepcopy(model).eval()(x + d), y).sum(), d)  # bn_mode eval
        expect_adv = x + _project(p + EPS * g.sign(), x)
        momentum = g / g.abs().sum(dim=(1, 2, 3), keepdim=True) + 0.3 * momentum
        prior = _project(p + EPS * momentum.sign(), x)
        x_adv = obj.perturb(model, x, y, state=BatchLedger(ledger, batch, visit))
        torch.testing.assert_close(x_adv, expect_adv, rtol=0, atol=1e-7)
        torch.testing.assert_close(ledger.fields[PRIOR], prior, rtol=0, atol=1e-7)
        torch.testing.assert_close(ledger.fields[MOMENTUM], momentum, rtol=1e-5, atol=1e-9)
    assert not torch.equal(ledger.fields[PRIOR], prior0)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("consistency", [True, False])
def test_loss_by_hand_through_both_forwards(consistency):
    model, obj = make_model(), _pgi(consistency=consistency)
    batch, ledger = _setup()
    obj.prepare_ledger(ledger, 0, generator(0, "ledger", 0))
    x, y = batch.x, batch.y
    x_prior = (x + ledger.fields[PRIOR]).clamp(0, 1)
    twin = copy.deepcopy(model)
    state = BatchLedger(ledger, batch, 0)
    x_adv = obj.perturb(model, x, y, state=state)
    losses, logits = obj.update_loss(model, x, x_adv, y, state=state)
    assert model.training and "x_prior" not in state.scratch  # handed over once
    twin.train()
    expect = _smoothed_ce(twin(x_adv), y)
    if consistency:  # 10 * MSE between the outputs at the trained perturbation and at the prior
        expect = expect + 10 * (twin(x_adv) - twin(x_prior)).pow(2).mean(1)
    torch.testing.assert_close(losses, expect, rtol=1e-5, atol=1e-6)
    losses.mean().backward()
    expect.mean().backward()
    for a, b in zip(model.parameters(), twin.parameters()):  # gradients through both outputs
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def _passes(**params) -> dict[str, int]:
    from distributed_adcs.engine.epoch import train_epoch
    from distributed_adcs.engine.schedule import EpochSchedule
    from distributed_adcs.models import PassCounter

    model, obj = make_model(), _pgi(**params)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batch, ledger = _setup(16)
    obj.prepare_ledger(ledger, 0, generator(0, "ledger", 0))
    halves = [Batch(x=batch.x[s], y=batch.y[s], index=batch.index[s], position=batch.position[s],
                    weight=batch.weight[s]) for s in (slice(0, 8), slice(8, 16))]
    counter = PassCounter(model)
    train_epoch(model, obj, halves, opt, EpochSchedule(opt, TrainConfig(schedule="constant", lr=0.01)), 0, 2,
                generator=torch.Generator().manual_seed(0), ledger=ledger)
    assert ledger.fields[MOMENTUM].abs().flatten(1).sum(1).gt(0).all()  # every example's entry was written
    return counter.state()


def test_the_consistency_forward_is_counted():
    # 16 examples: the attack's forward and input-gradient backward, the prior's forward, the
    # update's forward, and the backward through both
    assert _passes() == {"passes_forward": 48, "passes_backward": 48}
    assert _passes(consistency=False) == {"passes_forward": 32, "passes_backward": 32}


def test_reset_every_r_epochs_and_without_a_ledger():
    obj = _pgi(reset_every=3)
    batch, ledger = _setup()
    obj.prepare_ledger(ledger, 0, generator(0, "ledger", 0))
    ledger.write(PRIOR, batch.index, torch.zeros_like(batch.x))
    for epoch in (1, 2):  # kept between resets
        obj.prepare_ledger(ledger, epoch, generator(0, "ledger", epoch))
        assert ledger.fields[PRIOR].abs().sum() == 0
    obj.prepare_ledger(ledger, 3, generator(0, "ledger", 3))
    assert torch.allclose(ledger.fields[PRIOR].abs(), torch.full_like(batch.x, EPS))
    model = make_model()  # a selection's attack: no ledger, a fresh random prior each call
    a = obj.perturb(model, batch.x, batch.y, torch.Generator().manual_seed(0))
    b = obj.perturb(model, batch.x, batch.y, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b) and (a - batch.x).abs().max() <= EPS + 1e-6


def test_config():
    cfg = load_config(None, ["objective.name=fgsm_pgi", "objective.params.consistency=false"])
    assert cfg.objective.params == FGSMPGIParams(consistency=False)
    p = load_config(None, ["objective.name=fgsm_pgi"]).objective.params
    assert (p.true_class_prob, p.lam, p.momentum_decay, p.reset_every) == (0.6, 10.0, 0.3, 15)
    with pytest.raises(ConfigError):
        load_config(None, ["objective.name=fgsm_pgi", "objective.params.reset_every=0"])
