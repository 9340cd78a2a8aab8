"""``engine.epoch.train_epoch``: its statistics and its per-example records, replayed by hand."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from tiny_models import fit_briefly, make_data, make_model

from distributed_adcs.config import ObjectiveConfig, TrainConfig
from distributed_adcs.data.batches import Batch
from distributed_adcs.engine.epoch import train_epoch
from distributed_adcs.engine.schedule import EpochSchedule
from distributed_adcs.objectives import build_objective


def _batches(x: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> list[Batch]:
    out, start = [], 0
    for n in sizes:
        sl = slice(start, start + n)
        pos = torch.arange(start, start + n) * 3 + 1  # positions differ from plain counters
        out.append(Batch(x=x[sl], y=y[sl], index=torch.arange(start, start + n), position=pos,
                         weight=torch.linspace(0.5, 1.5, n)))
        start += n
    return out


def _setup():
    x, y = make_data(20, seed=4, n_classes=3)
    model = fit_briefly(make_model(4, n_classes=3), x, y, steps=12)
    obj = build_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.004, steps=1, random_start=False))
    return model, obj, x, y


def test_epoch_accuracy_loss_and_records_match_a_replay() -> None:
    model, obj, x, y = _setup()
    twin = copy.deepcopy(model)
    batches = _batches(x, y, [8, 7, 5])
    opt_t = torch.optim.SGD(twin.parameters(), lr=0.05)
    want_pos, want_loss, correct, loss_sum = [], [], 0, 0.0
    for b in batches:
        x_adv = obj.perturb(twin, b.x, b.y)
        losses, logits = obj.update_loss(twin, b.x, x_adv, b.y)
        want_pos.append(b.position)
        want_loss.append(losses.detach())
        loss = (losses * b.weight).mean()
        opt_t.zero_grad()
        loss.backward()
        opt_t.step()
        loss_sum += loss.item() * len(b.y)
        correct += int((logits.argmax(1) == b.y).sum())
    assert 0 < correct < 20  # the accuracy is informative

    got_pos, got_loss = [], []

    def record(position: torch.Tensor, losses: torch.Tensor) -> None:
        assert not losses.requires_grad
        got_pos.append(position)
        got_loss.append(losses)

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = time.perf_counter()
    stats = train_epoch(model, obj, batches, opt, EpochSchedule(opt, TrainConfig(schedule="constant", lr=0.05)),
                        0, len(batches), record=record)
    wall = time.perf_counter() - before
    assert stats.examples == 20
    assert stats.adv_accuracy == pytest.approx(correct / 20, abs=1e-12)
    assert stats.loss == pytest.approx(loss_sum / 20, rel=1e-6)
    assert 0 <= stats.attack_seconds <= stats.seconds <= wall
    assert len(got_pos) == 3
    for gp, wp, gl, wl in zip(got_pos, want_pos, got_loss, want_loss):
        assert torch.equal(gp, wp)
        torch.testing.assert_close(gl, wl, rtol=1e-5, atol=1e-6)


def test_epoch_of_one_correctly_classified_example() -> None:
    model, obj, x, y = _setup()
    model.eval()
    with torch.no_grad():
        right = (model(x).argmax(1) == y).nonzero().flatten()
    i = int(right[0])
    batch = _batches(x[i : i + 1], y[i : i + 1], [1])
    opt = torch.optim.SGD(model.parameters(), lr=1e-9)
    stats = train_epoch(model, obj, batch, opt, EpochSchedule(opt, TrainConfig(schedule="constant", lr=1e-9)), 0, 1)
    assert stats.examples == 1 and stats.adv_accuracy == 1.0
