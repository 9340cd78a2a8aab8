"""Paths that may be URIs (``distributed_adcs.storage``), and checkpoints that outlive the
machine that wrote them: a job killed between the steps that record an epoch (coreset,
checkpoint, metrics: ``tracking/epochs.py``), on one node and then on another, resumes each
time from another working directory, with the first node's disk gone, and ends as if never
stopped; on both execution paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from distributed_adcs import storage

from helpers import ROOT, TINY, new_store


def test_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.is_uri("s3://b/k") and storage.is_uri("file:///x") and not storage.is_uri("/x")
    assert not storage.is_uri("runs") and not storage.is_uri("./s3:/b")
    assert storage.is_local("file:///x") and storage.is_local("runs") and not storage.is_local("gs://b/k")
    assert storage.join("s3://bucket/runs/", "abc", "ray") == "s3://bucket/runs/abc/ray"
    assert storage.join("runs", "abc") == str(tmp_path / "runs" / "abc")  # the old bug: <cwd>/s3:/... for URIs
    assert storage.local_path("file://" + str(tmp_path / "a")) == tmp_path / "a"
    with pytest.raises(ValueError, match="is not on the local filesystem"):
        storage.local_path("s3://b/k")
    with pytest.raises(ValueError, match=r"^cannot open nosuch://x: Unrecognized filesystem type"):
        storage.filesystem("nosuch://x")


def test_upload_download_list_through_pyarrow(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00\x01" * 5000)
    target = f"file://{tmp_path}/remote/deep/last.pt"
    storage.upload(src, target)  # creates the directories, leaves no temporary file
    assert storage.exists(target) and not storage.exists(target + ".tmp")
    assert storage.list_files(f"file://{tmp_path}/remote/deep") == [str(tmp_path / "remote/deep/last.pt")]
    assert storage.list_files(f"file://{tmp_path}/nowhere") == []
    back = storage.download(target, tmp_path / "back" / "last.pt")
    assert back.read_bytes() == src.read_bytes() and not (tmp_path / "back" / "last.pt.part").exists()


def _run_and_kill_then_resume_elsewhere(tmp_path, extra: list[str]):
    """An uninterrupted run (a), and a run (b) of the same job, killed twice by a real SIGKILL of
    the process that records it (this one, or a Ray Train job's controller):

    1. after epoch 1's coreset is recorded and before its checkpoint; b's node then loses its
       disk, and b is resumed by run id from another working directory with another
       ``train.output_dir``: from the run's MLflow copy of epoch 0's checkpoint, so epoch 1 is
       trained again;
    2. there, after epoch 2's checkpoint is recorded and before its metrics; resumed again, b
       records epoch 2's metrics from that checkpoint and trains no epoch.

    Returns both outcomes."""
    from distributed_adcs.tracking.epochs import KILL_ENV

    sets = [*TINY, "train.epochs=3", "coreset.method=craig", "coreset.warmup_epochs=1", "coreset.every=1",
            "deterministic=true", *extra]
    config = str(ROOT / "configs" / "quickstart.yaml")
    cmd = [sys.executable, "-m", "distributed_adcs.cli", "train", "--config", config, "--quiet"]

    def args(db: Path, output: str):
        return [a for s in [*sets, f"mlflow.tracking_uri=sqlite:///{db}", f"train.output_dir={output}"]
                for a in ("--set", s)]

    a, b, elsewhere = tmp_path / "a", tmp_path / "b", tmp_path / "another-node"
    for d in (a, b, elsewhere):
        d.mkdir()
    new_store(a / "mlflow.db"), new_store(b / "mlflow.db")
    def job(where: Path, *how: str, kill: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, KILL_ENV: f"{kill}:{tmp_path / kill.replace(':', '-')}"} if kill else None
        return subprocess.run([*cmd, *how], cwd=where, env=env, capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL)

    done = job(ROOT, *args(a / "mlflow.db", str(a / "runs")))
    assert done.returncode == 0, done.stderr[-3000:]
    client_b = MlflowClient(f"sqlite:///{b / 'mlflow.db'}")
    killed = job(ROOT, *args(b / "mlflow.db", str(b / "runs")), kill="1:coreset")
    assert killed.returncode != 0 and (tmp_path / "1-coreset").exists(), killed.stderr[-3000:]
    run_b = _only_run(b)
    assert _steps(client_b, run_b) == [0] and _coresets(client_b, run_b) == ["coresets/coreset_epoch001.parquet"]
    tagged = client_b.get_run(run_b).data.tags["adcs.checkpoint_dir"]
    assert Path(tagged).parent == b / "runs"
    shutil.rmtree(b / "runs")  # that node's disk: gone
    killed = job(elsewhere, "--resume", run_b, *args(b / "mlflow.db", "runs"), kill="2:checkpoint")
    assert killed.returncode != 0 and (tmp_path / "2-checkpoint").exists(), killed.stderr[-3000:]
    assert _steps(client_b, run_b) == [0, 1]  # epoch 2's checkpoint is recorded, its metrics are not
    resumed = job(elsewhere, "--resume", run_b, *args(b / "mlflow.db", "runs"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = client_b.get_run(run_b)
    assert run.info.status == "FINISHED"
    assert Path(run.data.tags["adcs.checkpoint_dir"]) == elsewhere / "runs" / run_b  # where it wrote since
    assert (elsewhere / "runs" / run_b / "last.pt").is_file()
    return _outcome(a, _only_run(a)), _outcome(b, run_b)


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))


def _coresets(client: MlflowClient, run_id: str) -> list[str]:
    return [a.path for a in client.list_artifacts(run_id, "coresets")]


def _only_run(where: Path) -> str:
    client = MlflowClient(f"sqlite:///{where / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])[0].info.run_id


def _outcome(where: Path, run_id: str):
    client = MlflowClient(f"sqlite:///{where / 'mlflow.db'}")
    coresets = {a.path: pq.read_table(client.download_artifacts(run_id, a.path, str(where))).to_pydict()
                for a in client.list_artifacts(run_id, "coresets")}
    keys = ("train_loss", "train_adv_acc", "train_examples", "val_robust_acc", "lr", "test_clean_acc", "test_pgd3_acc",
            "passes_forward", "passes_backward")  # a resumed run's passes go on from its checkpoint's
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in keys}
    assert all(len({s for s, _ in h}) == len(h) for h in history.values()), history  # each epoch once
    history = {k: dict(h) for k, h in history.items()}
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/last.pt"]
    return coresets, history


def test_in_process_job_killed_inside_epochs_resumes_on_another_node(tmp_path):
    (coresets_a, history_a), (coresets_b, history_b) = _run_and_kill_then_resume_elsewhere(
        tmp_path, ["ray.num_workers=0", "ray.num_actors=0"])
    assert list(coresets_a) == ["coresets/coreset_epoch001.parquet", "coresets/coreset_epoch002.parquet"]
    assert coresets_a == coresets_b and history_a == history_b


@pytest.mark.ray
def test_ray_train_job_killed_inside_epochs_resumes_on_another_node(ray_session, tmp_path):
    """The kills are of the Train controller, which records the epochs; the checkpoint reaches
    the Train worker through the object store, not a driver path. This is also the test of a
    Ray Train job whose driver is SIGKILLed: the controller dies with it, so it is the same cut,
    and here it comes at the two points where a lost record could not be fixed by chance."""
    gcs = ray_session.get_runtime_context().gcs_address
    (coresets_a, history_a), (coresets_b, history_b) = _run_and_kill_then_resume_elsewhere(
        tmp_path, ["ray.num_workers=1", "ray.cpus_per_worker=1", f"ray.address={gcs}"])
    assert coresets_a == coresets_b and history_a == history_b


def test_resume_with_no_checkpoint_anywhere_fails_and_says_where_it_looked(tmp_path, mlflow_uri):
    from distributed_adcs.config import UsageError, load_config
    from distributed_adcs.run import train

    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("quickstart")
    run = client.create_run(exp, tags={"adcs.checkpoint_dir": str(tmp_path / "gone")})
    cfg = load_config("configs/quickstart.yaml", [*TINY, f"mlflow.tracking_uri={mlflow_uri}",
                                                  f"train.output_dir={tmp_path / 'runs'}"])
    client.set_tag(run.info.run_id, "adcs.checkpoint", str(tmp_path / "gone" / "last.pt"))
    with pytest.raises(UsageError, match=rf"^--resume {run.info.run_id}: no recorded checkpoint, neither where the "
                                         rf"run's adcs.checkpoint tag says \({tmp_path / 'gone' / 'last.pt'}\) nor in "
                                         rf"its MLflow artifacts \(checkpoints/last.pt\)"):
        train(cfg, resume=run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # untouched: not restarted at epoch 0
