"""The catastrophic-overfitting guard (engine/guard.py): it fires on a collapse, restores the
epoch before it, and trains on with its fallback (which a resume keeps); it stays quiet on a
normal run.

The collapse is provoked by an objective registered here: PGD-2 for its first ``GOOD_BATCHES``
updates, then cross-entropy against the wrong labels ``(y + 1) mod C``, which takes a model's
accuracy, clean and robust, to near 0 within the epoch, as catastrophic overfitting takes its
PGD accuracy.
"""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
import torch.nn.functional as F

from distributed_adcs.config import load_config
from distributed_adcs.engine.build import load_job_splits
from distributed_adcs.engine.job import Job
from distributed_adcs.engine.loop import run_epochs
from distributed_adcs.engine.runtime import seed_everything
from distributed_adcs.objectives.pgd import PGDObjective
from distributed_adcs.specs.objectives import OBJECTIVES, ObjectiveSpec

from helpers import TINY, two_gloo_ranks

BATCHES = 6  # data.limit=384 in batches of 64
GOOD_EPOCHS = 3  # the collapse starts in epoch 3 (0-based)


class Collapsing(PGDObjective):
    """PGD, until it has made ``GOOD_EPOCHS * BATCHES`` updates; then the wrong labels."""

    updates = 0
    after = GOOD_EPOCHS * BATCHES  # updates before the collapse (a DDP rank makes fewer per epoch)

    def update_loss(self, model, x, x_adv, y):
        losses, logits = super().update_loss(model, x, x_adv, y)
        Collapsing.updates += 1
        if Collapsing.updates > Collapsing.after:
            losses = F.cross_entropy(logits, (y + 1) % logits.shape[1], reduction="none")
        return losses, logits


class ListSink:
    """run_epochs' sink that keeps what it is given (the recording order is tracking's concern)."""

    def __init__(self):
        self.epochs = []

    def epoch(self, epoch, metrics, selection, payload):
        self.epochs.append((epoch, dict(metrics), copy.deepcopy(payload)))  # a file's copy: later steps
        # change the optimiser's buffers in place


SPEC = ObjectiveSpec(name="collapsing", summary="PGD, then the wrong labels", build="test_guard:Collapsing",
                     norm="linf")


@pytest.fixture
def collapsing(monkeypatch):
    monkeypatch.setitem(OBJECTIVES, "collapsing", SPEC)
    Collapsing.updates, Collapsing.after = 0, GOOD_EPOCHS * BATCHES


def _job(*overrides):
    cfg = load_config("configs/quickstart.yaml", [*TINY, "objective.epsilon=0.05", "train.lr=0.1",
                                                  "train.schedule=constant", *overrides])
    seed_everything(cfg.seed)  # as the runners do: the same initial model for the same seed
    return Job(cfg, load_job_splits(cfg), torch.device("cpu"))


GUARD = ["guard.enabled=true", "guard.examples=128", "guard.pgd_steps=3"]


def test_guard_fires_on_a_collapse_restores_and_trains_on_with_pgd2(collapsing):
    job = _job("objective.name=collapsing", "train.epochs=5", *GUARD)
    sink = ListSink()
    run_epochs(job, sink)
    assert [e for e, _, _ in sink.epochs] == [0, 1, 2, 3, 4]  # each epoch recorded once
    metrics = {e: m for e, m, _ in sink.epochs}
    # the collapsed epoch's passes were spent: the retrained epoch's count adds to them
    spent = [metrics[e]["passes_forward"] - metrics[e - 1]["passes_forward"] for e in range(1, 5)]
    assert spent[GOOD_EPOCHS - 1] > 1.5 * spent[GOOD_EPOCHS - 2], spent
    fired = [e for e, m in metrics.items() if m.get("co_guard_fired")]
    assert fired == [GOOD_EPOCHS]
    assert metrics[GOOD_EPOCHS]["co_guard_drop"] > 0.2
    assert metrics[GOOD_EPOCHS]["co_guard_collapsed_acc"] < metrics[GOOD_EPOCHS - 1]["co_guard_robust_acc"] - 0.2
    # the collapsing objective ran one epoch past its good ones, then the fallback took over
    assert Collapsing.updates == (GOOD_EPOCHS + 1) * BATCHES
    assert type(job.objective) is PGDObjective and job.objective.spec.steps == 2
    assert all(m["co_guard_robust_acc"] > 0.2 for m in metrics.values())  # no collapsed model recorded

    # restored: the retrained epoch equals PGD-2 trained from the epoch before the collapse
    before = sink.epochs[GOOD_EPOCHS - 1][2]
    replay = _job("train.epochs=5")
    replay.restore(before)
    replay.run_epoch(GOOD_EPOCHS)
    assert _digest(replay.model.state_dict()) == _digest(sink.epochs[GOOD_EPOCHS][2]["model"])

    # the fallback outlives a resume: a job restored from a later checkpoint trains PGD-2
    resumed = _job("objective.name=collapsing", "train.epochs=5", *GUARD)
    resumed.restore(sink.epochs[-1][2])
    assert type(resumed.objective) is PGDObjective and resumed.objective.spec.steps == 2
    assert resumed.guard.fired_at == GOOD_EPOCHS


def test_guard_stop_ends_the_run_with_the_model_before_the_collapse(collapsing):
    job = _job("objective.name=collapsing", "train.epochs=6", *GUARD, "guard.fallback=stop")
    sink = ListSink()
    run_epochs(job, sink)
    assert [e for e, _, _ in sink.epochs] == list(range(GOOD_EPOCHS + 1))  # stopped after the collapsed one
    last_epoch, last, payload = sink.epochs[-1]
    assert last["co_guard_fired"] == 1.0 and payload["guard"]["stopped"]
    assert payload["epoch"] == GOOD_EPOCHS + 1
    # the collapsed epoch is recorded with the model of the epoch before it
    assert _digest(payload["model"]) == _digest(sink.epochs[-2][2]["model"])
    # a resume stays stopped: nothing more is trained
    resumed = _job("objective.name=collapsing", "train.epochs=6", *GUARD, "guard.fallback=stop")
    resumed.restore(payload)
    again = ListSink()
    run_epochs(resumed, again)
    assert again.epochs == [] and Collapsing.updates == (GOOD_EPOCHS + 1) * BATCHES


def test_guard_stays_quiet_on_a_normal_run():
    job = _job("train.epochs=4", *GUARD)
    sink = ListSink()
    run_epochs(job, sink)
    metrics = [m for _, m, _ in sink.epochs]
    assert len(metrics) == 4 and not any("co_guard_fired" in m for m in metrics)
    assert all(0 < m["co_guard_robust_acc"] <= 1 for m in metrics)
    assert type(job.objective) is PGDObjective and job.objective.spec.steps == 2  # TINY's own PGD-2
    assert job.guard.fired_at is None


def test_guard_off_by_default_changes_nothing():
    cfg = load_config("configs/quickstart.yaml", TINY)
    assert not cfg.guard.enabled
    on, off = _job("train.epochs=1", *GUARD), _job("train.epochs=1")
    a, b = ListSink(), ListSink()
    run_epochs(on, a)
    run_epochs(off, b)
    assert off.guard is None
    assert _digest(a.epochs[0][2]["model"]) == _digest(b.epochs[0][2]["model"])  # the check does not train
    assert {k for k in a.epochs[0][1] if k.startswith("co_guard")} == {"co_guard_robust_acc"}
    assert not any(k.startswith("co_guard") for k in b.epochs[0][1])


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(name.encode() + t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_a_run_records_the_firing_in_mlflow(collapsing, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from distributed_adcs.run import train

    cfg = load_config("configs/quickstart.yaml", [*TINY, "objective.epsilon=0.05", "train.lr=0.1",
                                                  "train.schedule=constant", "objective.name=collapsing",
                                                  "train.epochs=5", *GUARD, f"mlflow.tracking_uri={mlflow_uri}",
                                                  f"train.output_dir={tmp_path}"])
    run_id = train(cfg)
    client = MlflowClient(mlflow_uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "co_guard_fired")] == [(GOOD_EPOCHS, 1.0)]
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [0, 1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run_id, "co_guard_robust_acc")] == [0, 1, 2, 3, 4]
    assert client.get_metric_history(run_id, "test_pgd3_acc")  # the final evaluation ran


def _rank_guard(rank: int):
    from torch.nn.parallel import DistributedDataParallel

    from distributed_adcs.distributed.trainer import DDPBackend

    OBJECTIVES["collapsing"] = SPEC  # a spawned process: the registry entry again
    Collapsing.after = GOOD_EPOCHS * BATCHES // 2  # each rank trains half of every epoch
    cfg = load_config("configs/quickstart.yaml", [*TINY, "objective.epsilon=0.05", "train.lr=0.1",
                                                  "train.schedule=constant", "objective.name=collapsing",
                                                  "train.epochs=4", *GUARD])
    seed_everything(cfg.seed)
    job = Job(cfg, load_job_splits(cfg, evaluates=rank == 0), torch.device("cpu"),
              backend=DDPBackend(rank, 2, cfg.seed), wrap_model=DistributedDataParallel)
    sink = ListSink()
    run_epochs(job, sink)
    return ([(e, m.get("co_guard_fired")) for e, m, _ in sink.epochs], _digest(job.model.state_dict()),
            type(job.objective).__name__, job.objective.spec.steps, Collapsing.updates)


def test_two_ddp_ranks_fire_restore_and_fall_back_together():
    """Two gloo ranks: rank 0 checks, both restore and train on with PGD-2, and end equal."""
    out = two_gloo_ranks(_rank_guard)
    (epochs0, model0, kind0, steps0, updates0), (epochs1, model1, kind1, steps1, updates1) = out[0], out[1]
    assert epochs0 == [(e, 1.0 if e == GOOD_EPOCHS else None) for e in range(4)]  # rank 0 records
    assert epochs1 == [(e, None) for e in range(4)]  # rank 1 keeps pace, records nothing
    assert model0 == model1
    assert (kind0, steps0) == (kind1, steps1) == ("PGDObjective", 2)
    assert updates0 == updates1 == (GOOD_EPOCHS + 1) * BATCHES // 2
