"""``adcs sweep``: a Ray Tune search where every trial is a whole training job.

Train V2 refuses ``Tuner(TorchTrainer)``, so each trial is a function trainable that calls the
job entry point it is handed (``adcs sweep`` hands it ``distributed_adcs.run.train``): in-process training (``ray.num_workers: 0``, the trial holds
``trial_cpus``) or a Ray Train job (the trial itself holds only a sliver of the custom
``TRAIN_DRIVER`` resource so that on a small machine its workers get the CPUs; see
RAY-MLFLOW-NOTES). ASHA stops weak trials on ``val_robust_acc``.

MLflow: one parent run for the sweep; each trial's job run is nested under it. Trials that
ASHA stops are killed with their actor, so their runs would stay RUNNING: the driver marks
them KILLED. The parent logs ``summary.csv``, ``best_config.yaml`` (ready to run with
``adcs train --config``) and ``plots/robust_vs_time.png``.
"""

from __future__ import annotations

import csv
import tempfile
from functools import partial
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler  # noqa: E402

from .. import storage  # noqa: E402
from ..config import dump_yaml  # noqa: E402
from ..console import say  # noqa: E402
from ..sweep_config import SweepConfig, grid_size, load_sweep, trial_config  # noqa: E402
from ..tracking import RunTracker, resolve_tracking_uri  # noqa: E402
from ..tracking.job_run import run_name  # noqa: E402
from ..tracking.plots import curve_over_time, over_time_figure  # noqa: E402
from .cluster import connect  # noqa: E402

DRIVER_RESOURCE = "TRAIN_DRIVER"
SAMPLERS = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}


TrainJob = Callable[..., str]  # the signature of distributed_adcs.run.train


def _trial(config: dict, *, train: TrainJob, base: dict, fixed: dict, parent_run_id: str, uri: str,
           output_dir: str, trial_cpus: float) -> None:
    cfg = trial_config(base, fixed, config["params"])
    cfg.mlflow.tracking_uri, cfg.train.output_dir = uri, output_dir  # trial actors change directory
    cfg.mlflow.run_name = f"{run_name(cfg)}-{tune.get_context().get_trial_id()}"
    cfg.ray.address = None  # already inside the sweep's Ray
    torch.set_num_threads(max(1, int(trial_cpus)))  # (a Ray Train trial computes nothing in this process)
    train(cfg, parent_run_id=parent_run_id, callbacks=[TuneEpochReport()])


class TuneEpochReport:
    """The trials' epoch hook: each epoch's metrics to the Tune trial that runs the job.

    An in-process job calls it in the trial itself. A Ray Train job calls it in the Train
    controller, another process, which reaches the trial through the queue that Tune's own
    ``TuneReportCallback`` holds: that callback is made (in the trial, where it must be) when
    this hook is pickled for the controller, so an in-process trial starts no queue actor.
    """

    def __init__(self):
        self._queue = None

    def __getstate__(self) -> dict:
        from ray.tune.integration.ray_train import TuneReportCallback

        return {"_queue": self._queue or TuneReportCallback()}

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        row = {**metrics, "epoch": epoch}
        if self._queue is None:
            tune.report(row)
        else:
            self._queue.after_report(None, [row], None)


def run_sweep(path: str | Path, train: TrainJob) -> str:
    """Run the sweep in ``path``, every trial a ``train(cfg, parent_run_id=..., ...)`` job;
    returns the parent MLflow run id."""
    sweep, base = load_sweep(path)
    base_cfg = trial_config(base, sweep.set, {})
    uri = resolve_tracking_uri(base_cfg.mlflow.tracking_uri)
    parent = RunTracker(uri, base_cfg.mlflow.experiment, outage_s=base_cfg.mlflow.outage_s)
    parent.start(f"sweep-{sweep.name}", {f"sweep.{k}": v for k, v in _sweep_params(sweep).items()},
                 {"adcs.sweep": sweep.name, "adcs.dataset": base_cfg.data.name},
                 f"Ray Tune sweep of {grid_size(sweep)} grid trials over {', '.join(sweep.search)}")
    output_dir = storage.join(base_cfg.train.output_dir)  # a URI stays one; a path is made absolute
    with parent:
        # the same Ray start-up as adcs train, plus the trial drivers' custom resource
        started = connect(base_cfg, resources={DRIVER_RESOURCE: 1000})
        try:
            check_sweep_store(uri, base_cfg.ray.num_workers > 0)
            results = _fit(sweep, base, uri, parent.run_id, output_dir, base_cfg, train)
        finally:
            if started:
                ray.shutdown()
        children = _close_children(parent, results)
        _log_summary(parent, sweep, base, results, children)
    say(f"sweep {sweep.name}: {len(results)} trials; MLflow parent run {parent.run_id} at {uri}")
    return parent.run_id


def _sweep_params(sweep: SweepConfig) -> dict:
    return {"search": sweep.search, "set": sweep.set, "num_samples": sweep.num_samples, "scheduler": sweep.scheduler,
            "metric": sweep.metric, "max_concurrent_trials": sweep.max_concurrent_trials}


def _fit(sweep: SweepConfig, base: dict, uri: str, parent_run_id: str, output_dir: str, base_cfg, train: TrainJob):
    space = {"params": {key: SAMPLERS[kind](values) for key, spec in sweep.search.items()
                        for kind, values in spec.items()}}
    resources = trial_resources(base_cfg.ray.num_workers > 0, sweep.trial_cpus)
    fn = partial(_trial, train=train, base=base, fixed=sweep.set, parent_run_id=parent_run_id, uri=uri, output_dir=output_dir,
                 trial_cpus=sweep.trial_cpus)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=base_cfg.train.epochs + 1,
                               grace_period=sweep.grace_period, reduction_factor=sweep.reduction_factor)
                 if sweep.scheduler == "asha" else FIFOScheduler())
    tuner = tune.Tuner(
        tune.with_resources(fn, resources), param_space=space,
        tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, scheduler=scheduler,
                                    num_samples=sweep.num_samples, max_concurrent_trials=sweep.max_concurrent_trials),
        run_config=tune.RunConfig(name=f"sweep-{parent_run_id}", storage_path=storage.join(output_dir, "tune"),
                                  verbose=0))
    return tuner.fit()


def check_sweep_store(uri: str, distributed: bool) -> None:
    """In-process trials run on any node: with a store on one node's disk, the trials of other
    nodes would record into files of their own, which the sweep never sees.

    Raises:
        UsageError: such a sweep on a cluster of more than one node.
    """
    from ..config import UsageError
    from ..tracking.stores import node_local_store

    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    if not distributed and nodes > 1 and node_local_store(uri) is not None:
        raise UsageError(f"this sweep's trials train on any of the cluster's {nodes} nodes, but MLflow records into "
                         f"{node_local_store(uri)}, a file of one node: set mlflow.tracking_uri to a tracking server "
                         f"(http://<host>:5000, see cluster/mlflow-server.yaml)")


def trial_resources(distributed: bool, trial_cpus: float) -> dict[str, float]:
    """What one trial holds: its CPUs when it trains in-process; for a Ray Train trial, whose
    driver only waits, a sliver of ``TRAIN_DRIVER``, so that the workers get every CPU.

    Raises:
        UsageError: a Ray Train sweep on a cluster that does not declare ``TRAIN_DRIVER``
            (``ray.init`` cannot add it to a running cluster): its trials would wait forever.
    """
    from ..config import UsageError

    if not distributed:
        return {"CPU": trial_cpus}
    if ray.cluster_resources().get(DRIVER_RESOURCE, 0) < 0.01:
        raise UsageError(f"a sweep of Ray Train trials (ray.num_workers > 0) needs the custom resource "
                         f"{DRIVER_RESOURCE} for the trials' drivers, and this cluster has none: start its head with "
                         f"ray start --head --resources='{{\"{DRIVER_RESOURCE}\": 1000}}' (as cluster/*.yaml do), "
                         f"or set ray.num_workers=0 to train each trial in its own process")
    return {DRIVER_RESOURCE: 0.01}


def _trial_id(run) -> str:
    """The Tune trial id a child run is named after (``_trial`` names it ``<run name>-<id>``)."""
    return run.info.run_name.rsplit("-", 1)[-1]


def _close_children(parent: RunTracker, results) -> list:
    """Mark the runs of trials the scheduler stopped as KILLED; return all child runs.

    A stopped trial either dies with its actor (its run stays RUNNING) or gets Tune's stop
    raised into it (its run ends FAILED). Tune knows the difference: a trial that really
    failed has ``result.error``; one that was stopped has none. Only those are changed.
    """
    query = f"tags.mlflow.parentRunId = '{parent.run_id}'"
    errored = {str((r.metrics or {}).get("trial_id", "")) for r in results if r.error}
    for run in parent.client.search_runs([parent.experiment_id], filter_string=query):
        if run.info.status == "RUNNING" or (run.info.status == "FAILED" and _trial_id(run) not in errored):
            parent.client.set_terminated(run.info.run_id, status="KILLED")
    return parent.client.search_runs([parent.experiment_id], filter_string=query)


def _log_summary(parent: RunTracker, sweep: SweepConfig, base: dict, results, children: list) -> None:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = str(metrics.get("trial_id", ""))
        run = next((r for r in children if trial_id and _trial_id(r) == trial_id), None)
        params = (result.config or {}).get("params", {})
        rows.append({"trial": trial_id, "mlflow_run_id": run.info.run_id if run else "",
                     "status": run.info.status if run else ("ERROR" if result.error else "UNKNOWN"),
                     **{f"param.{k}": v for k, v in params.items()},
                     sweep.metric: metrics.get(sweep.metric), "epochs_run": metrics.get("epoch", -1) + 1,
                     "wall_time_s": metrics.get("wall_time_s")})
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "summary.csv"
        with table.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}, key=_column_order))
            writer.writeheader()
            writer.writerows(rows)
        parent.log_artifact(table)
        best = results.get_best_result(metric=sweep.metric, mode=sweep.mode, scope="last", filter_nan_and_inf=True)
        best_cfg = trial_config(base, sweep.set, best.config["params"])
        parent.log_text(f"# best trial of sweep {sweep.name}: {sweep.metric}={best.metrics.get(sweep.metric)}\n"
                        + dump_yaml(best_cfg), "best_config.yaml")
        parent.log_metrics({f"best_{sweep.metric}": best.metrics.get(sweep.metric, float("nan")),
                            "trials": len(rows)}, step=0)
        _plot(parent, children, sweep.metric, Path(tmp))
    for row in rows:  # one line per trial on the console: what it tried, how it did, where it is
        params = " ".join(f"{k[len('param.'):]}={v}" for k, v in row.items() if k.startswith("param."))
        value = row.get(sweep.metric)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
        say(f"  trial {row['trial']}: {params}: {sweep.metric}={shown} after {row['epochs_run']} epochs, "
            f"{row['status']} (MLflow run {row['mlflow_run_id'] or '-'})")


def _column_order(key: str) -> tuple:
    head = ["trial", "mlflow_run_id", "status"]
    return (head.index(key), key) if key in head else (len(head) + (not key.startswith("param.")), key)


def _plot(parent: RunTracker, children: list, metric: str, tmp: Path) -> None:
    curves = [(f"{run.info.run_name} ({run.info.status.lower()})", curve_over_time(parent.client, run.info.run_id, metric))
              for run in children]
    fig = over_time_figure(curves, xlabel="wall-clock time of the trial (min)", ylabel=metric)
    fig.savefig(tmp / "robust_vs_time.png", dpi=110)
    plt.close(fig)
    parent.log_artifact(tmp / "robust_vs_time.png", "plots")
