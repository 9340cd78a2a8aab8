"""MLflow the way a cluster runs it: a tracking server over HTTP with proxied artifacts (what
cluster/mlflow-server.yaml deploys), and the warnings a job gets for a store on one node."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from distributed_adcs.tracking.stores import node_local_store, store_warnings

from helpers import TINY, mlflow_server, run_adcs
from test_run_tracker import check_non_finite_metrics_come_back


@pytest.fixture
def tracking_server(tmp_path):
    with mlflow_server(tmp_path, str(tmp_path / "server-artifacts")) as url:
        yield url, tmp_path / "server-artifacts"


def test_a_job_records_through_a_tracking_server_and_resumes_from_it(tracking_server, tmp_path):
    url, artifacts = tracking_server
    sets = [*TINY, "coreset.method=random", "coreset.warmup_epochs=1", f"mlflow.tracking_uri={url}",
            f"train.output_dir={tmp_path / 'runs'}"]
    proc = run_adcs("train", "--config", "configs/quickstart.yaml", "--quiet", *[a for s in sets for a in ("--set", s)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"at {url}" in proc.stdout
    client = MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert run.info.status == "FINISHED" and "test_clean_acc" in run.data.metrics
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: the client never touches the disk
    stored = {p.relative_to(artifacts).as_posix() for p in artifacts.rglob("*") if p.is_file()}
    assert any(p.endswith("checkpoints/last.pt") for p in stored) and any("coresets/" in p for p in stored)
    # the run's checkpoint comes back through the server: evaluate it, and resume a run from it
    proc = run_adcs("evaluate", "--run", run.info.run_id, "--tracking-uri", url, "--set", "eval.test_limit=64",
                    "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import shutil

    shutil.rmtree(tmp_path / "runs")  # the local copy is gone: --resume finds the run's artifact
    proc = run_adcs("train", "--config", "configs/quickstart.yaml", "--quiet", "--resume", run.info.run_id,
                    *[a for s in sets for a in ("--set", s)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert steps == [0, 1]  # it had finished: resuming trained no epoch again
    # NaN and +-inf metrics through the server come back as from a sqlite store (this server is
    # costly to start, so its check lives here)
    check_non_finite_metrics_come_back(url)


def test_store_warnings_name_the_problem(tmp_path):
    assert node_local_store("http://mlflow:5000") is None and node_local_store("databricks") is None
    assert node_local_store("sqlite:////data/m.db") == Path("/data/m.db")
    assert node_local_store("file:///data/mlruns") == Path("/data/mlruns") and node_local_store("mlruns") == Path("mlruns")
    assert store_warnings("sqlite:////data/m.db", joining_cluster=False) == []  # a local job: fine
    assert store_warnings("http://mlflow:5000", joining_cluster=True) == []
    (one,) = store_warnings("sqlite:////data/m.db", joining_cluster=True)
    assert one.startswith("MLflow records this job in /data/m.db, a file on this node only")
    one, two = store_warnings("sqlite:////tmp/ray/session_1/runtime_resources/working_dir_files/x/mlflow.db", True)
    assert "inside a temporary directory" in two and "deleted when the job ends" in two


def test_a_job_joining_a_cluster_with_a_file_store_is_warned(tmp_path):
    """RAY_ADDRESS set (as in a submitted Ray job) and a sqlite store: the warning comes before
    anything runs (here the job then fails fast on a config error it has anyway: no Ray needed)."""
    proc = run_adcs("train", "--config", "configs/quickstart.yaml", "--quiet", "--resume", "no-such-run",
                    "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}",
                    env={"RAY_ADDRESS": "127.0.0.1:1"})
    assert proc.returncode == 2
    assert f"warning: MLflow records this job in {tmp_path / 'm.db'}, a file on this node only" in proc.stderr
