"""adcs sweep: a real Ray Tune search of tiny jobs, nested MLflow runs, ASHA stops closed KILLED."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from distributed_adcs.config import ConfigError, load_config
from distributed_adcs.sweep_config import grid_size, load_sweep

from helpers import ROOT, TINY, run_adcs


def _write_sweep(tmp_path: Path, mlflow_uri: str, search: dict, **extra) -> Path:
    fixed = dict(s.split("=", 1) for s in TINY)
    fixed = {k: yaml.safe_load(v) for k, v in fixed.items()}
    fixed.update({"train.epochs": 3, "coreset.method": "random", "coreset.warmup_epochs": 1, "coreset.every": 1,
                  "mlflow.tracking_uri": mlflow_uri, "mlflow.experiment": "sweeps",
                  "train.output_dir": str(tmp_path / "runs")})
    spec = {"base": str(ROOT / "configs" / "quickstart.yaml"), "name": "tiny", "set": fixed, "search": search,
            "max_concurrent_trials": 2, "trial_cpus": 1, "grace_period": 1, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_spec_is_checked_before_any_trial(tmp_path, mlflow_uri):
    bad = _write_sweep(tmp_path, mlflow_uri, {"coreset.fractoin": {"grid": [0.2]}})
    with pytest.raises(ConfigError, match=r"^search.coreset.fractoin: coreset.fractoin: unknown key"):
        load_sweep(bad)
    bad = _write_sweep(tmp_path, mlflow_uri, {"coreset.fraction": {"grid": [0.2, 1.5]}})
    with pytest.raises(ConfigError, match="must be in"):
        load_sweep(bad)
    bad = _write_sweep(tmp_path, mlflow_uri, {"train.lr": {"gaussian": [0.1, 1]}})
    with pytest.raises(ConfigError, match="kind in grid"):
        load_sweep(bad)
    proc = run_adcs("sweep", "--config", str(bad))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    ok = _write_sweep(tmp_path, mlflow_uri, {"coreset.fraction": {"grid": [0.2, 0.4]},
                                              "train.lr": {"grid": [0.01, 0.05]}, "objective.epsilon": {"uniform": [0.05, 0.1]}})
    assert grid_size(load_sweep(ok)[0]) == 4
    assert grid_size(load_sweep(ROOT / "configs" / "sweep_quickstart.yaml")[0]) == 8


def test_small_sweep_end_to_end(tmp_path, mlflow_uri):
    """``adcs sweep`` as a user runs it: the runs, the parent's summary, and a console of our
    lines only (its trials' job lines, one line per trial, the summary; no Tune table)."""
    from test_console import sweep_lines

    # One trial at a time, a good learning rate first: ASHA then has a good result at every
    # rung before the near-frozen trials (lr 1e-6) reach it, and stops them.
    path = _write_sweep(tmp_path, mlflow_uri, {"train.lr": {"grid": [0.05, 1e-6, 1e-6]},
                                                "coreset.fraction": {"grid": [0.3]}},
                        max_concurrent_trials=1)
    proc = run_adcs("sweep", "--config", str(path))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    strays = [line for line in lines if not any(p.match(line) for p in sweep_lines(3, "random"))]
    assert not strays, "lines that are not ours:\n" + "\n".join(strays[:20])
    assert sum(line.startswith("  trial ") for line in lines) == 3
    assert lines[-1].startswith("sweep tiny: 3 trials")
    parent_id = lines[-1].split("MLflow parent run ")[1].split()[0]
    client = MlflowClient(mlflow_uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    exp = client.get_experiment_by_name("sweeps").experiment_id
    children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 3
    assert "KILLED" in {run.info.status for run in children}  # ASHA stopped someone, closed KILLED
    for run in children:
        assert run.info.run_name.startswith("fashion_mnist-pgd_linf-random")  # findable in the UI
        epochs = len(client.get_metric_history(run.info.run_id, "val_robust_acc"))
        assert run.info.status in {"FINISHED", "KILLED"}, run.info.status
        assert (run.info.status == "FINISHED") == (epochs == 3), (run.info.status, epochs)
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"summary.csv", "best_config.yaml", "plots"} <= artifacts
    rows = list(csv.DictReader(open(client.download_artifacts(parent_id, "summary.csv", str(tmp_path)))))
    assert len(rows) == 3 and {r["mlflow_run_id"] for r in rows} == {c.info.run_id for c in children}
    best = load_config(client.download_artifacts(parent_id, "best_config.yaml", str(tmp_path)))
    assert best.coreset.fraction == 0.3 and best.train.lr == 0.05
    assert [a.path for a in client.list_artifacts(parent_id, "plots")] == ["plots/robust_vs_time.png"]


def test_ray_train_trial_reports_each_epoch_to_tune_from_the_controller(tmp_path, mlflow_uri):
    """A trial that trains with Ray Train workers: the job's one epoch hook runs in the Train
    controller and reaches the trial's Tune session (the summary's last result is the last epoch's)."""
    from distributed_adcs.distributed.sweep import run_sweep
    from distributed_adcs.run import train

    path = _write_sweep(tmp_path, mlflow_uri, {"train.lr": {"grid": [0.05]}}, scheduler="fifo", max_concurrent_trials=1)
    spec = yaml.safe_load(path.read_text())
    spec["set"].update({"ray.num_workers": 1, "ray.cpus_per_worker": 1, "train.epochs": 2})
    path.write_text(yaml.safe_dump(spec))
    parent_id = run_sweep(path, train)
    client = MlflowClient(mlflow_uri)
    (row,) = csv.DictReader(open(client.download_artifacts(parent_id, "summary.csv", str(tmp_path))))
    assert row["status"] == "FINISHED" and row["epochs_run"] == "2", row
    last = client.get_metric_history(row["mlflow_run_id"], "val_robust_acc")[-1]
    assert last.step == 1 and float(row["val_robust_acc"]) == last.value
