"""Schedules, the coreset epoch plan, checkpoints and seeds."""

import os

import pytest
import torch

from distributed_adcs.config import CoresetConfig, TrainConfig
from distributed_adcs.engine.checkpoint import load_checkpoint, save_checkpoint
from distributed_adcs.engine.epoch import normalised_weights
from distributed_adcs.engine.phases import epoch_phase, selection_epochs
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
    v = normalised_weights(w, 20)
    assert v.mean() == pytest.approx(1.0)
    assert (v * losses).mean() == pytest.approx((w * losses).sum() / 20)


def test_gradmatch_coreset_trains_on_the_full_data_gradient():
    # A case where GradMatch matches exactly: per-example "gradients" of a linear loss
    # l_j(theta) = a_j * theta, so the gradient of l_j is a_j (d = 1). One picked example with
    # weight w = sum_j a_j / a_i matches the full gradient sum exactly, and w != N.
    from distributed_adcs.coreset import select

    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    n = a.numel()
    core = select("gradmatch", a[:, None], torch.zeros(n, dtype=torch.int64), 1)
    w = core.weights
    assert (w * a[core.indices]).sum().item() == pytest.approx(a.sum().item(), rel=1e-4)  # exact, up to the ridge
    assert w.sum().item() != pytest.approx(n)  # GradMatch weights do not count examples
    theta = torch.tensor(0.5, requires_grad=True)
    v = normalised_weights(w, n)
    (v * a[core.indices] * theta).mean().backward()  # the training loss of the coreset epoch
    full = (a * 0.5).sum() / n  # the full-data mean loss ...
    assert theta.grad.item() == pytest.approx(a.mean().item(), rel=1e-4)  # ... and its gradient
    assert full.item() == pytest.approx((v * a[core.indices] * 0.5).mean().item(), rel=1e-4)


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


def test_batch_sizes_fold_a_last_batch_of_one():
    from distributed_adcs.data.batches import batch_sizes, num_batches

    assert batch_sizes(129, 128) == [128, 1] and batch_sizes(129, 128, min_batch=2) == [129]
    assert batch_sizes(256, 128, min_batch=2) == [128, 128] and batch_sizes(1, 128, min_batch=2) == [1]
    assert batch_sizes(130, 128, drop_last=True, min_batch=2) == [128]
    assert num_batches(129, 128, min_batch=2) == 1 and num_batches(129, 128) == 2


@pytest.mark.parametrize("limit, extra", [(129, []), (1, []), (3, ["coreset.method=random", "coreset.fraction=0.34",
                                                                     "coreset.warmup_epochs=0"])])
def test_no_batch_arithmetic_crashes_small_cnn(limit, extra, tmp_path, mlflow_uri):
    # small_cnn has a BatchNorm1d, which cannot train on a batch of one example: 129 examples in
    # batches of 128, a one-example data set, and a one-example coreset must all train.
    from mlflow.tracking import MlflowClient

    from distributed_adcs.config import load_config
    from distributed_adcs.run import train

    from helpers import TINY

    cfg = load_config("configs/quickstart.yaml", [*TINY, f"data.limit={limit}", "data.batch_size=128",
                                                  "train.epochs=1", f"mlflow.tracking_uri={mlflow_uri}",
                                                  f"train.output_dir={tmp_path}", *extra])
    run_id = train(cfg)
    client = MlflowClient(mlflow_uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    examples = client.get_metric_history(run_id, "train_examples")[0].value
    assert examples == {129: 129, 1: 2, 3: 2}[limit]  # a one-example epoch trains that example twice


def test_final_full_epochs_train_on_everything():
    cfg = CoresetConfig(method="adaptive", warmup_epochs=1, every=1, final_full_epochs=2)
    assert [epoch_phase(e, cfg, 6) for e in range(6)] == ["full", "select", "select", "select", "full", "full"]
    assert selection_epochs(6, cfg) == [1, 2, 3]
    assert [epoch_phase(e, cfg) for e in range(6)][-1] == "select"  # without the epoch count: no anneal


def test_val_every_validates_every_nth_epoch_and_the_last(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from distributed_adcs.config import load_config
    from distributed_adcs.run import train

    from helpers import TINY, EpochLog

    cfg = load_config("configs/quickstart.yaml", [*TINY, "train.epochs=3", "eval.val_every=2", "data.limit=128",
                                                  f"mlflow.tracking_uri={mlflow_uri}", f"train.output_dir={tmp_path}"])
    hook = EpochLog(tmp_path / "epochs.jsonl")
    run_id = train(cfg, callbacks=[hook])
    client = MlflowClient(mlflow_uri)
    assert [m.step for m in client.get_metric_history(run_id, "val_robust_acc")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run_id, "val_time_s")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [0, 1, 2]
    # the job's epoch hook saw each epoch once, after its metrics were recorded, in this process
    losses = {m.step: m.value for m in client.get_metric_history(run_id, "train_loss")}
    assert [(c["epoch"], c["train_loss"], c["pid"]) for c in hook.calls()] == [(e, losses[e], os.getpid()) for e in range(3)]
    passes = [m.value for m in client.get_metric_history(run_id, "passes_backward")]
    assert passes[0] > 0 and passes == sorted(passes)  # cumulative


def test_resume_onto_another_device_restores_rng_and_state(tmp_path):
    """GPU resume (issue: ``map_location=device`` handed ``torch.set_rng_state`` a CUDA tensor).
    On a CPU-only machine the ``meta`` device stands in for the GPU: a checkpoint loaded onto it
    is what crashed, and a job on it restores from the CPU-loaded checkpoint every run loads."""
    from helpers import TINY

    from distributed_adcs.config import load_config
    from distributed_adcs.engine.build import load_job_splits
    from distributed_adcs.engine.job import Job

    cfg = load_config("configs/quickstart.yaml", [*TINY, "coreset.method=craig", "coreset.warmup_epochs=1"])
    splits = load_job_splits(cfg)
    job = Job(cfg, splits, torch.device("cpu"))
    job.run_epoch(0)
    saved = save_checkpoint(tmp_path / "last.pt", job.payload())
    with pytest.raises(TypeError, match="ByteTensor"):  # the failure: RNG state loaded onto the device
        torch.set_rng_state(load_checkpoint(saved, map_location="meta")["rng"]["torch"])

    payload = load_checkpoint(saved)  # what every resume path loads: on the CPU
    assert all(t.device.type == "cpu" for t in payload["model"].values())
    expected_rng = payload["rng"]["torch"].clone()
    torch.manual_seed(12345)  # a different stream, which restore must replace
    other = Job(cfg, splits, torch.device("meta"))
    other.restore(payload)
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert other.state.epoch == 1 and next(other.model.parameters()).device.type == "meta"
    momentum = [v for st in other.state.optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    assert momentum and all(v.device.type == "meta" for v in momentum)  # the optimiser follows its parameters


class _SignalInCleanup:
    """An epoch hook where a SIGTERM lands inside cleanup code whose own error replaces it, as a
    SIGTERM inside a temporary directory's removal did (its os.close then failed with EBADF)."""

    def on_epoch(self, epoch, metrics):
        import signal

        from distributed_adcs.engine.runtime import Interrupted

        try:
            raise Interrupted(signal.SIGTERM, "terminated (SIGTERM)")
        finally:
            raise OSError(9, "Bad file descriptor")  # noqa: B012 - the masking is what is tested


def test_a_signal_masked_by_cleanup_still_kills_the_run(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from distributed_adcs.config import load_config
    from distributed_adcs.engine.runtime import Interrupted
    from distributed_adcs.run import train

    from helpers import TINY

    cfg = load_config("configs/quickstart.yaml", [*TINY, "train.epochs=1", f"mlflow.tracking_uri={mlflow_uri}",
                                                  f"train.output_dir={tmp_path}"])
    with pytest.raises(Interrupted) as caught:
        train(cfg, callbacks=[_SignalInCleanup()])
    assert caught.value.signum == 15 and "--resume" in caught.value.message
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.mlflow.experiment).experiment_id])
    assert run.info.status == "KILLED"
