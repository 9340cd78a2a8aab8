"""Four ``adcs train`` jobs at once, writing to the same new ``mlflow.db``: nothing lost, nothing locked.

What a user running a few jobs side by side meets first: four processes that create the store's
schema, the same experiment and their runs in the same second, then log metrics, params,
checkpoints and plots concurrently. Every job must finish, and every run must hold every
metric row it logged: the same keys, each at every step, as a job that ran alone.
"""

from __future__ import annotations

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from helpers import ROOT, tiny_args

JOBS, EPOCHS = 4, 3


def test_four_jobs_on_one_sqlite_store_lose_nothing(tmp_path):
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # no file yet: the four jobs create it (not helpers.new_store)
    assert not (tmp_path / "mlflow.db").exists()
    procs = []
    for i in range(JOBS):
        args = ["train", "--config", "configs/quickstart.yaml",
                *tiny_args(tmp_path, mlflow_uri, f"train.epochs={EPOCHS}", f"seed={i}")]
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed_adcs.cli", *args], cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, (out + err)[-3000:]
        assert "database is locked" not in out + err and "Traceback" not in out + err

    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert len(runs) == JOBS and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.params["seed"] for r in runs}) == JOBS
    histories = []
    for run in runs:
        keys = sorted(run.data.metrics)
        steps = {k: sorted(m.step for m in client.get_metric_history(run.info.run_id, k)) for k in keys}
        histories.append(steps)
        assert steps["train_loss"] == list(range(EPOCHS)) and steps["val_robust_acc"] == list(range(EPOCHS))
        assert steps["test_clean_acc"] == [EPOCHS]
        assert client.list_artifacts(run.info.run_id, "checkpoints")
    # every run holds the same metric rows: no job's writes were dropped by another's
    assert all(h == histories[0] for h in histories), [sum(map(len, h.values())) for h in histories]
