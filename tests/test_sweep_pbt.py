"""adcs sweep with scheduler pbt: trials report checkpoints, an exploited trial continues its own
MLflow run from the donor's checkpoint with the donor's values, every epoch recorded once."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from distributed_adcs.config import ConfigError
from distributed_adcs.sweep_config import load_sweep, within_search

from helpers import ROOT
from test_sweep import _write_sweep

PBT = {"scheduler": "pbt", "pbt": {"mutate": ["train.lr"], "perturbation_interval": 1}}


def test_pbt_settings_are_checked_before_any_trial(tmp_path, mlflow_uri):
    lr = {"train.lr": {"loguniform": [0.01, 0.1]}}
    pbt = {**PBT, "num_samples": 2}  # a population
    for search, extra, error in [
        (lr, {**pbt, "search_alg": "optuna"}, r"^search_alg: scheduler pbt takes Tune's basic generator"),
        (lr, {**pbt, "pbt": {"mutate": ["train.momentum"]}}, r"^pbt.mutate.train.momentum: not searched"),
        ({**lr, "model.name": {"choice": ["small_cnn"]}}, {**pbt, "pbt": {"mutate": ["model.name"]}},
         r"^pbt.mutate.model.name: cannot change mid-run"),
        (lr, {**pbt, "pbt": {"mutate": []}}, r"^pbt.mutate: must name at least one"),
        (lr, {**pbt, "pbt": {"mutate": ["train.lr"], "perturbaton_interval": 2}}, r"^pbt.perturbaton_interval: unknown"),
        (lr, {**pbt, "pbt": {"mutate": ["train.lr"], "quantile_fraction": 0.7}}, r"^pbt.quantile_fraction: must be"),
        (lr, {"scheduler": "asha", "pbt": {"mutate": ["train.lr"]}}, r"^pbt: set only with scheduler: pbt"),
        (lr, {**pbt, "num_samples": 1}, r"^num_samples: scheduler pbt needs a population of 2 trials or more"),
    ]:
        with pytest.raises(ConfigError, match=error):
            load_sweep(_write_sweep(tmp_path, mlflow_uri, search, **extra))
    path = _write_sweep(tmp_path, mlflow_uri, lr, **pbt)
    spec = yaml.safe_load(path.read_text())
    spec["set"]["ray.num_workers"] = 1
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"^scheduler: pbt needs in-process trials \(ray.num_workers: 0, got 1\)"):
        load_sweep(path)
    sweep, _ = load_sweep(ROOT / "configs" / "sweep_pbt.yaml")  # the shipped example
    assert (sweep.scheduler, sweep.pbt.mutate, sweep.pbt.perturbation_interval) == ("pbt", ["train.lr", "train.momentum"], 2)
    # a perturbed value (x1.2, x0.8) stays within its search bounds
    search = {"train.lr": {"loguniform": [0.01, 0.1]}, "train.epochs": {"randint": [2, 5]}}
    assert within_search({"params": {"train.lr": 0.12, "train.epochs": 5}}, search) == \
        {"params": {"train.lr": 0.1, "train.epochs": 4}}


def test_pbt_exploit_continues_the_donors_checkpoint_in_the_trials_own_run(tmp_path, mlflow_uri):
    """Two trials that differ in their seed, train.lr mutated (within one value, so that a clone is
    exact), perturbed after each epoch: the weaker trial continues from the stronger one's
    checkpoint. Its first epoch after the exploit is then bit for bit the donor's same epoch: the
    same weights, optimiser buffers, random streams and values (from its own checkpoint, or a
    fresh start, it would differ)."""
    from distributed_adcs.distributed.sweep import run_sweep
    from distributed_adcs.distributed.sweep_trial import EXPLOIT_TAG, TRIAL_TAG
    from distributed_adcs.run import train

    path = _write_sweep(tmp_path, mlflow_uri, {"seed": {"grid": [0, 1]}, "train.lr": {"choice": [0.05]}}, **PBT,
                        max_concurrent_trials=2)
    spec = yaml.safe_load(path.read_text())
    spec["set"].update({"train.epochs": 2, "coreset.method": "full", "data.limit": 256, "data.val_size": 64})
    path.write_text(yaml.safe_dump(spec))
    parent_id = run_sweep(path, train)
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("sweeps").experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}, [r.info.status for r in runs]
    by_trial = {r.data.tags[TRIAL_TAG]: r for r in runs}
    history = {r.info.run_id: {key: [(m.step, m.value) for m in sorted(client.get_metric_history(r.info.run_id, key),
                                                                    key=lambda m: m.step)]
                               for key in ("train_loss", "val_robust_acc")} for r in runs}
    for run in runs:  # every epoch once, at its step
        assert [s for s, _ in history[run.info.run_id]["val_robust_acc"]] == [0, 1], history[run.info.run_id]
    exploits = [(r, json.loads(v)) for r in runs for k, v in r.data.tags.items() if k.startswith(EXPLOIT_TAG)]
    after_first_epoch = [(r, note) for r, note in exploits if note["epoch"] == 1]
    assert after_first_epoch, f"no exploit after epoch 0: {[(r.info.run_id, n) for r, n in exploits]}"
    run, note = after_first_epoch[0]
    donor = by_trial[note["donor_trial"]]
    assert note["donor_run"] == donor.info.run_id != run.info.run_id
    assert note["values"] == {"seed": int(donor.data.params["seed"]), "train.lr": 0.05}  # the donor's, lr mutated
    assert int(run.data.params["seed"]) != note["values"]["seed"]  # its params keep its first values
    mine, theirs = history[run.info.run_id], history[donor.info.run_id]
    assert mine["train_loss"][0] != theirs["train_loss"][0]  # epoch 0: two different trials
    assert mine["train_loss"][1] == theirs["train_loss"][1]  # epoch 1: from the donor's checkpoint, exactly
    assert mine["val_robust_acc"][1] == theirs["val_robust_acc"][1]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "pbt.train.lr")][0] == (1, 0.05)


def test_a_restored_checkpoint_trains_on_under_the_new_config_values():
    """A PBT exploit restores another job's checkpoint under new values: the optimiser keeps the
    checkpoint's buffers but takes this config's settings, and the schedule this config's lr at
    the checkpoint's progress."""
    import torch

    from distributed_adcs.config import load_config
    from distributed_adcs.engine.build import load_job_splits
    from distributed_adcs.engine.job import Job

    from helpers import TINY

    def job(*overrides):
        cfg = load_config(ROOT / "configs" / "quickstart.yaml", [*TINY, "train.schedule=constant", *overrides])
        return Job(cfg, load_job_splits(cfg), torch.device("cpu"))

    donor = job("train.lr=0.05", "train.momentum=0.9", "train.weight_decay=0.0005")
    payload = donor.payload()
    clone = job("train.lr=0.01", "train.momentum=0.5", "train.weight_decay=0.001")
    clone.restore(payload)
    (group,) = clone.state.optimizer.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.5, 0.001)
    assert all(torch.equal(a, b) for a, b in zip(clone.model.state_dict().values(), donor.model.state_dict().values()))
