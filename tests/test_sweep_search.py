"""adcs sweep's searchers and checks, and an Optuna sweep killed for real and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from distributed_adcs.config import ConfigError
from distributed_adcs.distributed.sweep_restore import listed_trials
from distributed_adcs.distributed.sweep_trial import LOST_TAG
from distributed_adcs.sweep_config import grid_size, load_sweep, max_epochs

from helpers import ROOT
from test_sweep import _write_sweep

TRIAL_TAG = "adcs.sweep_trial"  # (spelled out: a rename in the code fails here)


def _children(uri: str, parent_id: str | None = None) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sweeps")
    if exp is None:
        return []
    query = f"tags.mlflow.parentRunId = '{parent_id}'" if parent_id else "tags.`adcs.sweep_trial` != ''"
    return client.search_runs([exp.experiment_id], filter_string=query)


def test_search_alg_and_asha_size_are_checked(tmp_path, mlflow_uri, monkeypatch):
    from distributed_adcs import sweep_config

    with pytest.raises(ConfigError, match=r"^search.train.lr: search_alg optuna .* takes no grid: use choice"):
        load_sweep(_write_sweep(tmp_path, mlflow_uri, {"train.lr": {"grid": [0.01, 0.05]}}, search_alg="optuna"))
    with pytest.raises(ConfigError, match=r"^search.train.lr: search_alg grid runs every point"):
        load_sweep(_write_sweep(tmp_path, mlflow_uri, {"train.lr": {"uniform": [0.01, 0.05]}}, search_alg="grid"))
    monkeypatch.setitem(sweep_config.SEARCHERS, "hyperopt", "hyperopt_absent_here")  # a package not installed
    with pytest.raises(ConfigError, match=r"^search_alg: hyperopt needs .*pip install 'distributed_adcs\[sweep\]'$"):
        load_sweep(_write_sweep(tmp_path, mlflow_uri, {"train.lr": {"choice": [0.01]}}, search_alg="hyperopt"))
    # ASHA's max_t follows the longest trial, not the base config's epochs (3 in _write_sweep)
    sweep, base = load_sweep(_write_sweep(tmp_path, mlflow_uri, {"train.epochs": {"choice": [2, 7]}}))
    assert max_epochs(sweep, base) == 7
    sweep, base = load_sweep(_write_sweep(tmp_path, mlflow_uri, {"train.epochs": {"randint": [2, 6]}}))
    assert max_epochs(sweep, base) == 5
    sweep, base = load_sweep(_write_sweep(tmp_path, mlflow_uri, {"train.lr": {"choice": [0.1]}}))
    assert max_epochs(sweep, base) == 3
    sweep, base = load_sweep(ROOT / "configs" / "sweep_optuna.yaml")  # the shipped example
    assert (sweep.search_alg, grid_size(sweep), max_epochs(sweep, base)) == ("optuna", 8, 5)


def test_optuna_sweep_killed_after_its_second_trial_resumes_and_runs_each_trial_once(tmp_path, mlflow_uri):
    """An Optuna sweep of 4 tiny trials, one at a time, in a real ``adcs sweep`` process that is
    killed (SIGKILL) once two trials have finished, after Tune's last save of its trial list;
    ``adcs sweep --resume`` then runs only the rest, under the same parent run, with Optuna's
    restored state choosing them: the trials it proposes again take up the lost trials' runs."""
    path = _write_sweep(tmp_path, mlflow_uri, {"train.lr": {"loguniform": [0.01, 0.1]}}, search_alg="optuna",
                        num_samples=4, scheduler="fifo", max_concurrent_trials=1)
    spec = yaml.safe_load(path.read_text())
    spec["set"].update({"train.epochs": 1, "coreset.method": "full", "data.limit": 192, "data.val_size": 64})
    path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "distributed_adcs.cli", "sweep", "--quiet", "--config", str(path)]
    # Tune saves its trial list at most every TUNE_GLOBAL_CHECKPOINT_S (10 s at least by default,
    # longer than a trial here): an hour makes the kill lose what a killed driver can lose, the
    # trials after its first save, whose runs Tune's list then does not hold
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "3600"})
    try:
        deadline = time.monotonic() + 300
        while sum(r.info.status == "FINISHED" for r in _children(mlflow_uri)) < 2:
            assert driver.poll() is None and time.monotonic() < deadline, "the sweep ended before it was killed"
            time.sleep(0.5)
    finally:
        driver.kill()  # the driver for real: Ray's processes it started die with it
        driver.wait()
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # and anything of its session left behind
        except ProcessLookupError:
            pass
    before = {r.data.tags[TRIAL_TAG]: r for r in _children(mlflow_uri) if r.info.status == "FINISHED"}
    assert len(before) == 2
    (experiment,) = (tmp_path / "runs" / "tune").iterdir()
    proc = subprocess.run([sys.executable, "-m", "distributed_adcs.cli", "sweep", "--quiet", "--resume",
                           str(experiment)], cwd=ROOT, capture_output=True, text=True, timeout=400,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent_id = experiment.name.removeprefix("sweep-")
    children = _children(mlflow_uri, parent_id)
    trials = [r.data.tags[TRIAL_TAG] for r in children]  # each run tagged with its own trial, once
    assert len(children) == 4 and len(set(trials)) == 4 and {r.info.status for r in children} == {"FINISHED"}, \
        [(r.data.tags.get(TRIAL_TAG), r.info.status) for r in children]
    assert all(r.info.run_name.endswith(r.data.tags[TRIAL_TAG]) for r in children)
    listed = {t for t, _ in listed_trials(str(experiment))}
    lost = [trial for trial in before if trial not in listed]
    assert lost, "the kill lost no finished trial: the shape this test makes did not come"
    by_id = {r.info.run_id: r for r in children}
    for trial, run in before.items():  # the finished trials were not run again: the same runs, untouched
        after = by_id[run.info.run_id]
        assert after.info.end_time == run.info.end_time
        # a trial Tune lost was proposed again, under a new id, which took up its run
        assert (after.data.tags[TRIAL_TAG] != trial) == (trial in lost), (trial, lost)
        assert after.data.tags.get(LOST_TAG, trial) == trial
    assert f"{len(lost)} trial run(s) started after Tune's last save" in proc.stdout
    lrs = {float(r.data.params["train.lr"]) for r in children}
    assert len(lrs) == 4 and all(0.01 <= lr <= 0.1 for lr in lrs)
    states = list(experiment.glob("searcher-state-*.pkl"))
    assert states and all(b"optuna.samplers._tpe" in f.read_bytes() for f in states)  # Optuna (TPE) chose them
    parent = MlflowClient(mlflow_uri).get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.search_alg"] == "optuna"
    assert "sweep tiny: 4 trials;" in proc.stdout


def test_trials_bar_counts_ended_trials_and_survives_tune_storing_it(monkeypatch):
    """The sweep's bar (a Tune callback) shows k/N trials ended: counted from Tune's trials at each
    step, so a resumed sweep starts at k; Tune pickles it with the experiment, bar closed."""
    import pickle

    from ray.tune.experiment import Trial

    from distributed_adcs import console, progress
    from distributed_adcs.distributed.sweep_progress import TrialsBar

    monkeypatch.setattr(progress, "enabled", lambda: True)  # as on a terminal
    trials = [Trial("run_trial", stub=True) for _ in range(3)]
    trials[0].set_status(Trial.TERMINATED)
    bar = pickle.loads(pickle.dumps(TrialsBar(4, "tiny")))
    try:
        bar.on_step_end(0, trials)
        assert (console._state.bar.initial, console._state.bar.n, console._state.bar.total) == (1, 1, 4)
        trials[1].set_status(Trial.ERROR)
        bar.on_step_end(1, trials)
        assert (console._state.bar.n, console._state.bar.total) == (2, 4)
        assert "2/4" in str(console._state.bar) and "<" in str(console._state.bar)  # k/N and the time left
        assert not pickle.loads(pickle.dumps(bar))._open
    finally:
        bar.on_experiment_end(trials)
    assert console._state.bar is None
