"""The tracking store cluster/mlflow-server.yaml deploys, for real: ``mlflow server`` on PostgreSQL.

One throwaway PostgreSQL (``helpers.postgres_cluster``: initdb in a temporary directory, a child
of this process) and one server on it serve the module. They check 8 tiny jobs at once on one
experiment (what a sqlite store cannot take), each run whole with every metric row there and
its checkpoint back from the server, and a job that outlives its tracking server: the server is SIGKILLed right
after epoch 0 is recorded and comes back 25 s later on the same port and store; the job,
in-process and on Ray Train, must end FINISHED with every epoch's metrics and its last
checkpoint on the server (tracking/outbox.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import ROOT, TINY, KillServerAt, MlflowServer, create_database, postgres_cluster, tiny_args

DOWN_S = 25  # how long the server stays dead (the test)
# smaller than TINY: 8 of these run at once on 2 cores
SMALL = ["data.limit=128", "data.val_size=64", "eval.test_limit=64", "coreset.method=full"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    where = tmp_path_factory.mktemp("pg-server")
    with postgres_cluster() as cluster:
        # the driver and URI form of cluster/mlflow-server.yaml (postgresql+psycopg://)
        srv = MlflowServer(where, str(where / "artifacts"), backend=create_database(cluster, "mlflow"))
        srv.start()
        try:
            yield srv
        finally:
            srv.kill()


def _check_whole(url: str, run_id: str, epochs: int, tmp: Path) -> None:
    """The run is FINISHED with every epoch's metrics (once each), the test metrics, and the
    last epoch's checkpoint as its MLflow artifact."""
    from distributed_adcs.engine.checkpoint import load_checkpoint

    client = MlflowClient(url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_robust_acc", "epoch_time_s", "wall_time_s"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(epochs)), key
    assert [m.step for m in client.get_metric_history(run_id, "test_clean_acc")] == [epochs]
    ckpt = client.download_artifacts(run_id, "checkpoints/last.pt", str(tmp))
    assert load_checkpoint(ckpt)["epoch"] == epochs


def test_eight_jobs_at_once_on_one_experiment_lose_nothing(server, tmp_path):
    jobs, epochs = 8, 2
    procs = [subprocess.Popen([sys.executable, "-m", "distributed_adcs.cli", "train", "--config",
                               "configs/quickstart.yaml", "--quiet",
                               *tiny_args(tmp_path / str(i), server.url, *SMALL, f"train.epochs={epochs}", f"seed={i}",
                                          "mlflow.experiment=pg-eight")],
                              cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for i in range(jobs)]
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, (out + err)[-3000:]
    client = MlflowClient(server.url)
    runs = client.search_runs([client.get_experiment_by_name("pg-eight").experiment_id])
    assert len(runs) == jobs and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["seed"] for r in runs) == [str(i) for i in range(jobs)]
    rows = []
    for run in runs:
        history = {k: sorted(m.step for m in client.get_metric_history(run.info.run_id, k)) for k in run.data.metrics}
        assert history["train_loss"] == list(range(epochs)) and history["test_clean_acc"] == [epochs]
        assert client.list_artifacts(run.info.run_id, "checkpoints")
        rows.append(history)
    assert all(h == rows[0] for h in rows), [sum(map(len, h.values())) for h in rows]  # no run lost a row
    # and each is whole the way one job alone is: its checkpoint back from the server, its params
    for run in runs:
        _check_whole(server.url, run.info.run_id, epochs, tmp_path)
        assert run.data.params["train.epochs"] == str(epochs) and run.data.tags["adcs.method"] == "full"


def _restart_after_kill(server: MlflowServer, marker: Path, back: dict) -> threading.Thread:
    """Once ``marker`` says the server was killed, start it again ``DOWN_S`` later (same port,
    same store); ``back["at"]``: when it answers again."""

    def restart() -> None:
        while not marker.exists():
            time.sleep(0.1)
        server.kill()  # reaps what the SIGKILL left
        time.sleep(max(0.0, float(marker.read_text()) + DOWN_S - time.time()))
        server.start()
        back["at"] = time.time()

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    return thread


def _outage_job(server: MlflowServer, tmp_path: Path, experiment: str, *extra: str) -> str:
    from distributed_adcs.config import load_config
    from distributed_adcs.run import train

    marker, back = tmp_path / "killed", {}
    restart = _restart_after_kill(server, marker, back)
    assert server.proc is not None
    cfg = load_config("configs/quickstart.yaml", [*TINY, *SMALL, "train.epochs=3", f"mlflow.tracking_uri={server.url}",
                                                  f"mlflow.experiment={experiment}",
                                                  f"train.output_dir={tmp_path / 'runs'}", *extra])
    started = time.time()
    run_id = train(cfg, callbacks=[KillServerAt(server.proc.pid, marker)])
    restart.join(timeout=300)
    assert marker.exists() and time.time() - started > DOWN_S  # the server really was down, and the job waited
    _check_whole(server.url, run_id, 3, tmp_path)
    # epochs 1 and 2 trained while the server was down: their metrics were logged (they carry
    # the time they were logged) between the kill and the server's return, not after it
    killed = float(marker.read_text())
    logged = {m.step: m.timestamp / 1000 for m in MlflowClient(server.url).get_metric_history(run_id, "train_loss")}
    assert killed < logged[1] < logged[2] < back["at"], (killed, logged, back)
    return run_id


def test_an_in_process_job_outlives_its_tracking_server(server, tmp_path, capfd):
    _outage_job(server, tmp_path, "pg-outage-process")
    err = capfd.readouterr().err
    assert f"MLflow tracking server {server.url} does not answer" in err
    assert f"MLflow tracking server {server.url} answers again" in err


def test_a_ray_train_job_outlives_its_tracking_server(server, tmp_path, ray_session):
    import helpers

    ray_session.cloudpickle.register_pickle_by_value(helpers)  # the controller runs the hook
    _outage_job(server, tmp_path, "pg-outage-ray", "ray.num_workers=1", "ray.cpus_per_worker=1")


def test_a_server_gone_for_longer_than_outage_s_fails_the_run_in_one_line(server, tmp_path):
    """Last in the module: it leaves the server dead."""
    from distributed_adcs.tracking.mlflow_run import RunTracker
    from distributed_adcs.tracking.outbox import ServerUnreachable

    tracker = RunTracker(server.url, "pg-gone", outage_s=2)
    tracker.start("gone", {"a": 1})
    tracker.log_metrics({"loss": 1.0}, step=0)
    server.kill()
    started = time.monotonic()
    tracker.log_metrics({"loss": 0.5}, step=1)  # waits in the outbox: no error yet
    tracker.log_metrics({"loss": 0.25}, step=2)
    assert time.monotonic() - started < 2
    with pytest.raises(ServerUnreachable) as err:
        tracker.flush()
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"MLflow tracking server {server.url} did not answer for 2 s")
    assert "2 records of the run not delivered, the oldest metrics of step 1 ([Errno 111] Connection refused)" in message
