"""Schedules, the coreset epoch plan, checkpoints and seeds."""


import pytest
import torch

from distributed_adcs.config import CoresetConfig, TrainConfig
from distributed_adcs.engine.checkpoint import load_checkpoint, save_checkpoint
from distributed_adcs.engine.epoch import normalised_weights
from distributed_adcs.engine.plan import epoch_phase, selection_epochs
from distributed_adcs.engine.runtime import derive_seed, rng_state, set_rng_state
from distributed_adcs.engine.schedule import EpochSchedule


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


@pytest.mark.parametrize("name, expect", [
    ("constant", [1, 1, 1]),
    ("cosine", [1, 0.5, 0]),
    ("piecewise", [1, 0.1, 0.01]),  # milestones 0.5, 0.75 of 8 epochs: t=4 -> one decay, t=8 -> two
    ("onecycle", [0, (1 - 0.5) / 0.6, 0]),
])
def test_schedules(name, expect):
    opt = _opt()
    s = EpochSchedule(opt, TrainConfig(epochs=8, lr=1.0, schedule=name))
    got = [s.lr_at(t) for t in (0.0, 4.0, 8.0)]
    assert got == pytest.approx(expect, abs=1e-9)
    s.set(2.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(s.lr_at(2.0))
    s2 = EpochSchedule(_opt(), TrainConfig(epochs=8, lr=1.0, schedule=name))
    s2.load_state_dict(s.state_dict())
    assert s2.t == 2.0


def test_onecycle_peaks_at_40_percent():
    s = EpochSchedule(_opt(), TrainConfig(epochs=10, lr=0.2, schedule="onecycle"))
    assert s.lr_at(4.0) == pytest.approx(0.2)
    assert s.lr_at(2.0) == pytest.approx(0.1)


def test_plan_every_epoch_trains_and_selects_on_schedule():
    cfg = CoresetConfig(method="craig", warmup_epochs=2, every=3)
    phases = [epoch_phase(e, cfg) for e in range(10)]
    assert phases == ["full", "full", "select", "subset", "subset", "select", "subset", "subset", "select", "subset"]
    assert selection_epochs(10, cfg) == [2, 5, 8]
    assert {epoch_phase(e, CoresetConfig(method="full")) for e in range(10)} == {"full"}
    assert epoch_phase(0, CoresetConfig(method="random", warmup_epochs=0, every=1)) == "select"


def test_normalised_weights_estimate_full_mean():
    """sum(w)=N over k examples -> weights of mean 1; weighted mean = (1/N) sum w_i l_i."""
    w = torch.tensor([10.0, 5.0, 5.0])  # stands for N = 20 examples
    losses = torch.tensor([1.0, 2.0, 3.0])
    v = normalised_weights(w)
    assert v.mean() == pytest.approx(1.0)
    assert (v * losses).mean() == pytest.approx((w * losses).sum() / 20)


def test_checkpoint_roundtrip_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "rng": rng_state(),
               "coreset": {"positions": torch.arange(3), "weights": torch.ones(3), "epoch": 2}, "config": "a: 1\n"}
    path = save_checkpoint(tmp_path / "c" / "last.pt", payload)
    back = torch.load(path, weights_only=True)  # must not need pickle of arbitrary objects
    assert back["epoch"] == 3 and torch.equal(back["model"]["weight"], model.weight)
    assert not list(tmp_path.glob("c/*.tmp"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_restores_stream():
    state = rng_state()
    a = torch.rand(5)
    set_rng_state(state)
    assert torch.equal(a, torch.rand(5))


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "attack", 3, 1) == derive_seed(0, "attack", 3, 1)
    assert derive_seed(0, "attack", 3, 1) != derive_seed(0, "attack", 3, 2)
    assert 0 <= derive_seed(123, "x") < 2**63
