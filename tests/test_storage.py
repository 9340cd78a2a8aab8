"""Paths that may be URIs (``distributed_adcs.storage``), and checkpoints that outlive the
machine that wrote them: a job killed on one node resumes from another working directory,
with the first node's disk gone, from the run's MLflow artifact, and ends as if never stopped."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from distributed_adcs import storage

from helpers import ROOT, TINY


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
    """An uninterrupted run (a), and a run (b) SIGKILLed after its second epoch whose node
    then loses its disk (its checkpoint directory is deleted); b is resumed by run id from
    another working directory with another ``train.output_dir``; returns both outcomes."""
    from test_distributed import _wait_for_epoch

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
    done = subprocess.run([*cmd, *args(a / "mlflow.db", str(a / "runs"))], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = subprocess.Popen([*cmd, *args(b / "mlflow.db", str(b / "runs"))], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    client_b = MlflowClient(f"sqlite:///{b / 'mlflow.db'}")
    run_b = _wait_for_epoch(client_b, b / "mlflow.db", 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tagged = client_b.get_run(run_b).data.tags["adcs.checkpoint_dir"]
    assert Path(tagged).parent == b / "runs"
    shutil.rmtree(b / "runs")  # that node's disk: gone
    resumed = subprocess.run([*cmd, "--resume", run_b, *args(b / "mlflow.db", "runs")], cwd=elsewhere,
                             capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = client_b.get_run(run_b)
    assert run.info.status == "FINISHED"
    assert Path(run.data.tags["adcs.checkpoint_dir"]) == elsewhere / "runs" / run_b  # where it wrote since
    assert (elsewhere / "runs" / run_b / "last.pt").is_file()
    return _outcome(a, _only_run(a)), _outcome(b, run_b)


def _only_run(where: Path) -> str:
    client = MlflowClient(f"sqlite:///{where / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])[0].info.run_id


def _outcome(where: Path, run_id: str):
    client = MlflowClient(f"sqlite:///{where / 'mlflow.db'}")
    coresets = {a.path: pq.read_table(client.download_artifacts(run_id, a.path, str(where))).to_pydict()
                for a in client.list_artifacts(run_id, "coresets")}
    keys = ("train_loss", "train_adv_acc", "train_examples", "val_robust_acc", "lr", "test_clean_acc", "test_pgd3_acc")
    history = {k: {m.step: m.value for m in client.get_metric_history(run_id, k)} for k in keys}
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/last.pt"]
    return coresets, history


def test_in_process_job_resumes_on_another_node_from_mlflow(tmp_path):
    (coresets_a, history_a), (coresets_b, history_b) = _run_and_kill_then_resume_elsewhere(
        tmp_path, ["ray.num_workers=0", "ray.num_actors=0"])
    assert list(coresets_a) == ["coresets/coreset_epoch001.parquet", "coresets/coreset_epoch002.parquet"]
    assert coresets_a == coresets_b and history_a == history_b


@pytest.mark.ray
def test_ray_train_job_resumes_on_another_node_from_mlflow(ray_session, tmp_path):
    """The checkpoint reaches the Train worker through the object store, not a driver path."""
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
    with pytest.raises(UsageError, match=rf"^--resume {run.info.run_id}: no checkpoint in the run's directory "
                                         rf"\({tmp_path / 'gone'}\) nor in its MLflow artifacts \(checkpoints/last.pt\)"):
        train(cfg, resume=run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # untouched: not restarted at epoch 0
