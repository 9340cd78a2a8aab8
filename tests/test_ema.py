"""Weight averaging (``train.ema_decay``, engine/ema.py) and the best epoch's model (``eval.keep_best``).

- the average follows its rule (warm-up, BatchNorm statistics averaged, integer buffers copied)
  and skips an fp16 step the gradient scaler skipped;
- a resumed job equals an uninterrupted one: average, best model and final metrics;
- validation and the test evaluation run the average; best_test_* evaluate the best epoch's model;
- two DDP ranks (a real gloo group, no Ray) hold bit-identical averages after every epoch.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from distributed_adcs.config import ObjectiveConfig, TrainConfig, load_config
from distributed_adcs.engine.build import load_job_splits, make_objective
from distributed_adcs.engine.checkpoint import load_checkpoint, save_checkpoint, state_digest
from distributed_adcs.engine.ema import WeightAverage
from distributed_adcs.engine.epoch import train_epoch
from distributed_adcs.engine.job import Job
from distributed_adcs.engine.loop import run_epochs
from distributed_adcs.engine.runtime import seed_everything
from distributed_adcs.engine.schedule import EpochSchedule
from distributed_adcs.accuracy import robust_mask

from helpers import TINY, two_gloo_ranks

CPU = torch.device("cpu")


class Collect:
    """An epoch sink that keeps what it is handed (the test's own, in place of a run)."""

    def __init__(self):
        self.epochs: list[tuple[int, dict]] = []

    def epoch(self, epoch, metrics, selection, payload):
        self.epochs.append((epoch, metrics))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_average_follows_the_warm_up_rule_for_weights_and_batchnorm_buffers():
    net = _net()
    avg = WeightAverage(net, 0.9)
    expect = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for t in range(100):  # the decay reaches 0.9 at t = 80
        net.train()
        loss = net(torch.randn(8, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        d = min(0.9, (1 + t) / (10 + t))
        for k, v in net.state_dict().items():
            expect[k] = d * expect[k] + (1 - d) * v if v.is_floating_point() else v.clone()
        avg.update()
    got = avg.model.state_dict()
    assert avg.updates == 100 and avg.current_decay() == 0.9
    for k in expect:
        assert torch.allclose(got[k], expect[k], atol=1e-6), k
    # the BatchNorm running statistics are averaged, not copied; the step count is copied
    assert not torch.allclose(got["1.running_mean"], net.state_dict()["1.running_mean"])
    assert int(got["1.num_batches_tracked"]) == 100
    assert all(not p.requires_grad for p in avg.model.parameters())


def test_a_step_the_fp16_scaler_skips_is_not_averaged():
    """A batch with an infinite pixel gives infinite gradients: the scaler skips that step (and
    lowers its scale), and the average must not take it in; the finite batches are averaged."""
    net = _net()
    objective = make_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.1, steps=1))
    calls = []
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    schedule = EpochSchedule(opt, TrainConfig(epochs=1, lr=0.1, schedule="constant"))
    scaler = torch.amp.GradScaler("cpu")
    x = torch.rand(6, 3)
    bad = x.clone()
    bad[0, 0] = float("inf")
    batches = [SimpleNamespace(x=x, y=torch.tensor([0, 1] * 3), weight=torch.ones(6), position=torch.arange(6)),
               SimpleNamespace(x=bad, y=torch.tensor([0, 1] * 3), weight=torch.ones(6), position=torch.arange(6)),
               SimpleNamespace(x=x, y=torch.tensor([0, 1] * 3), weight=torch.ones(6), position=torch.arange(6))]
    train_epoch(net, objective, batches, opt, schedule, 0, 3, scaler=scaler, after_step=lambda: calls.append(1))
    assert len(calls) == 2


def _cfg(*extra):
    return load_config("configs/quickstart.yaml", [*TINY, "train.epochs=3", "train.ema_decay=0.9", *extra])


def _job(cfg, splits):
    seed_everything(cfg.seed)
    return Job(cfg, splits, CPU)


def test_resumed_job_equals_uninterrupted_average_best_and_final_metrics(tmp_path):
    cfg = _cfg()
    splits = load_job_splits(cfg)
    whole = _job(cfg, splits)
    run_epochs(whole, Collect())
    final = whole.final_evaluation()

    first = _job(cfg, splits)
    first.run_epoch(0)
    first.validate_if_due(0)
    saved = save_checkpoint(tmp_path / "last.pt", first.payload())
    resumed = _job(cfg, splits)
    resumed.restore(load_checkpoint(saved))
    run_epochs(resumed, Collect())

    assert resumed.ema.updates == whole.ema.updates > 0
    assert state_digest(resumed.ema.model) == state_digest(whole.ema.model)
    assert state_digest(whole.ema.model) != state_digest(whole.model)  # it averages
    assert resumed.best.epoch == whole.best.epoch
    assert all(torch.equal(resumed.best.state[k], v) for k, v in whole.best.state.items())
    again = resumed.final_evaluation()
    assert {k: v for k, v in again.items() if not k.startswith("time_")} == \
        {k: v for k, v in final.items() if not k.startswith("time_")}
    # the checkpoint's passes, then its own: the same count as the uninterrupted job's
    assert resumed.pass_counts() == whole.pass_counts() and whole.pass_counts()["passes_forward"] > 0
    assert {"best_epoch", "best_test_clean_acc", "best_test_pgd3_acc", "test_clean_acc"} <= final.keys()


def test_evaluating_a_checkpoint_tests_the_average_and_records_each_examples_outcome(tmp_path):
    # adcs evaluate (evaluation.py) must test what the job's own final evaluation tested: with
    # averaging on, the weight average of the checkpoint, not a fresh average of its weights
    from distributed_adcs.evaluation import evaluate
    from distributed_adcs.accuracy import unpack_mask

    cfg = _cfg("eval.keep_best=false")
    splits = load_job_splits(cfg)
    job = _job(cfg, splits)
    run_epochs(job, Collect())
    final = job.final_evaluation()
    saved = save_checkpoint(tmp_path / "last.pt", job.payload())
    again = evaluate(checkpoint=str(saved))
    assert {k: v for k, v in again.items() if not k.startswith("time_")} == \
        {k: v for k, v in final.items() if not k.startswith("time_")}
    ours = job.test_outcomes
    assert ours["examples"] == {"clean": 128, "pgd3": 128}
    for name, metric in (("clean", "test_clean_acc"), ("pgd3", "test_pgd3_acc")):
        mask = unpack_mask(ours["models"]["last"][name], 128)
        assert float(mask.float().mean()) == pytest.approx(final[metric])
    pgd, clean = (unpack_mask(ours["models"]["last"][k], 128) for k in ("pgd3", "clean"))
    assert not (pgd & ~clean).any()  # robust only where also clean


def test_validation_and_test_run_the_average_and_best_is_chosen_by_validation():
    cfg = _cfg("eval.test_limit=128")
    splits = load_job_splits(cfg)
    job = _job(cfg, splits)
    sink = Collect()
    run_epochs(job, sink)
    vals = [m["val_robust_acc"] for _, m in sink.epochs]
    best = max(range(len(vals)), key=lambda e: (vals[e], -e))  # the first of the highest
    assert job.best.epoch == best and job.best.val_robust_acc == vals[best]
    batches = job._batches(splits.val)
    from distributed_adcs.config import eval_threat
    from distributed_adcs.engine.runtime import generator

    norm, eps = eval_threat(cfg)
    mask = robust_mask(job.ema.model, batches, norm=norm, epsilon=eps, steps=cfg.eval.val_pgd_steps,
                       generator=generator(cfg.seed, "val", cfg.train.epochs - 1))
    assert vals[-1] == int(mask.sum()) / mask.numel()  # the last validation ran the average
    final = job.final_evaluation()
    assert final["best_epoch"] == best
    if best == cfg.train.epochs - 1:
        assert final["best_test_clean_acc"] == final["test_clean_acc"]
    else:  # the best epoch's model is evaluated on its own
        model = Job(cfg, splits, CPU).model
        model.load_state_dict(job.best.state)
        assert final["best_test_clean_acc"] == job._test(model)["test_clean_acc"]


def test_keep_best_off_and_averaging_off_report_only_the_last_model():
    cfg = load_config("configs/quickstart.yaml", [*TINY, "eval.keep_best=false"])
    splits = load_job_splits(cfg)
    job = _job(cfg, splits)
    run_epochs(job, Collect())
    assert job.ema is None and job.eval_model is job.model
    assert job.payload()["best"] is None and job.payload()["ema"] is None
    assert not any(k.startswith("best_") for k in job.final_evaluation())


@pytest.mark.parametrize("bad", ["1", "0", "-0.5", "1.5"])
def test_decay_outside_the_open_unit_interval_is_refused(bad):
    with pytest.raises(Exception, match="ema_decay"):
        load_config("configs/quickstart.yaml", [f"train.ema_decay={bad}"])


def _rank_average(rank: int):
    from torch.nn.parallel import DistributedDataParallel

    from distributed_adcs.distributed.trainer import DDPBackend

    cfg = _cfg("train.epochs=2")
    splits = load_job_splits(cfg, evaluates=rank == 0)
    seed_everything(cfg.seed)
    job = Job(cfg, splits, CPU, backend=DDPBackend(rank, 2, cfg.seed), wrap_model=DistributedDataParallel)
    digests = []
    for epoch in range(cfg.train.epochs):
        job.run_epoch(epoch)
        digests.append(state_digest(job.ema.model))
    return (digests, job.ema.updates, state_digest(job.model),
            {k: tuple(v.shape) for k, v in job.ema.model.state_dict().items()})


def test_two_ddp_ranks_hold_the_same_average_after_every_epoch():
    """Two gloo ranks (DDP-wrapped models, each training its half of every epoch): bit-identical
    averages (weights and BatchNorm statistics) on both ranks after every epoch, over as many
    optimiser steps as each rank took, with the 1-worker job's parameters and buffers. Not equal
    to the 1-worker average bit for bit: 2 ranks take half the steps of twice the batch, with
    per-rank BatchNorm statistics, like every other 1-vs-2 comparison here (test_distributed)."""
    out = two_gloo_ranks(_rank_average)
    (d0, n0, m0, shapes0), (d1, n1, m1, shapes1) = out[0], out[1]
    assert shapes0 == shapes1
    assert d0 == d1 and n0 == n1 and m0 == m1
    assert d0[0] != d0[1] and d0[-1] != m0
    cfg = _cfg("train.epochs=2")
    one = _job(cfg, load_job_splits(cfg))
    for epoch in range(2):
        one.run_epoch(epoch)
    assert shapes0 == {k: tuple(v.shape) for k, v in one.ema.model.state_dict().items()}
    steps_per_rank = -(-(-(-384 // 2)) // 64)  # 192 examples per rank, batches of 64
    assert n0 == 2 * steps_per_rank and one.ema.updates == 2 * -(-384 // 64)
