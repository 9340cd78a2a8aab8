"""``adcs sweep``: a Ray Tune search where every trial is a whole training job.

Each trial (``sweep_trial.run_trial``) trains in-process (``ray.num_workers: 0``, the trial
holds ``trial_cpus``) or runs a Ray Train job (the trial itself holds only a sliver of the
custom ``TRAIN_DRIVER`` resource so that on a small machine its workers get the CPUs; see
RAY-MLFLOW-NOTES). Tune's basic generator (``search_alg: random | grid``) or a model-based
searcher (``optuna``, ``hyperopt``) proposes the trials, at most ``max_concurrent_trials`` at a
time; ASHA stops weak trials on ``val_robust_acc``, or PBT (``scheduler: pbt``) has the weak
ones continue from the strong ones' checkpoints with perturbed values (``sweep_trial``).

Resume: the sweep's Tune experiment lives in ``<train.output_dir>/tune/sweep-<parent run id>``,
with ``adcs_sweep.json`` (the sweep and its base config). ``adcs sweep --resume <that
directory>`` restores it with ``Tuner.restore``: finished trials are not run again, and the
same parent run collects the rest. Before that, ``sweep_restore`` brings the stored search
algorithm to the stored trial list (a kill between Tune's two saves leaves them apart), and
the runs of trials created after Tune's last save, which its list lost, go to the trials that
propose their values again (``sweep_lost``).

MLflow: one parent run for the sweep; each trial's job run is nested under it. Trials that
ASHA stops are killed with their actor, so their runs would stay RUNNING: the driver marks
them KILLED. The parent logs ``summary.csv``, ``best_config.yaml`` (ready to run with
``adcs train --config``) and ``plots/robust_vs_time.png``.
"""

from __future__ import annotations

import csv
import json
import tempfile
import warnings
from dataclasses import asdict
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from .. import storage  # noqa: E402
from ..config import dump_yaml  # noqa: E402
from ..console import say  # noqa: E402
from ..sweep_config import SweepConfig, grid_size, load_sweep, sweep_from_state, sweep_state, trial_config  # noqa: E402
from ..tracking import RunTracker, resolve_tracking_uri  # noqa: E402
from ..tracking.plots import curve_over_time, over_time_figure  # noqa: E402
from .cluster import connect  # noqa: E402
from .sweep_progress import TrialsBar  # noqa: E402
from .sweep_lost import LostRunsActor, find_lost  # noqa: E402
from .sweep_restore import listed_trials, reconcile_search_state  # noqa: E402
from .sweep_schedulers import SAMPLERS, make_scheduler  # noqa: E402
from .sweep_trial import TRIAL_TAG, TrainJob, run_trial  # noqa: E402

DRIVER_RESOURCE = "TRAIN_DRIVER"
STATE_FILE = "adcs_sweep.json"  # in the sweep's Tune experiment directory: what --resume reads


def _optuna(seed: int) -> Searcher:
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=seed)


def _hyperopt(seed: int) -> Searcher:
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(random_state_seed=seed)


# search_alg -> its Ray Tune searcher, seeded with the base config's seed (None: Tune's basic
# generator, which crosses grid keys and draws the rest); Tune's ConcurrencyLimiter wraps it
SEARCHERS = {"random": None, "grid": None, "optuna": _optuna, "hyperopt": _hyperopt}


def run_sweep(path: str | Path, train: TrainJob) -> str:
    """Run the sweep in ``path``, every trial a ``train(cfg, parent_run_id=..., ...)`` job;
    returns the parent MLflow run id."""
    sweep, base = load_sweep(path)
    return _sweep(sweep, base, train)


def resume_sweep(directory: str, train: TrainJob) -> str:
    """Continue the sweep whose Tune experiment is ``directory`` (killed at trial k of N): its
    unfinished trials run under the same parent run; returns that run's id.

    Raises:
        UsageError: ``directory`` holds no sweep that can be restored.
    """
    from ..config import UsageError

    directory = storage.join(directory)
    if not storage.exists(storage.join(directory, STATE_FILE)) or not tune.Tuner.can_restore(directory):
        raise UsageError(f"--resume {directory}: not a sweep's directory (no {STATE_FILE} and Tune experiment "
                         f"state in it); adcs sweep prints it when it starts")
    with tempfile.TemporaryDirectory() as tmp:
        state = json.loads(storage.download(storage.join(directory, STATE_FILE), Path(tmp) / STATE_FILE).read_text())
    sweep, base = sweep_from_state(state)
    fixed = reconcile_search_state(directory)
    if fixed:
        proposed, listed, lost = fixed
        say(f"sweep {sweep.name}: Tune's search state had proposed {proposed} trials and its trial list holds "
            f"{listed} (the driver died between Tune's two saves); the search goes on from the list"
            + (f", {lost} trial(s) short of num_samples" if lost else ""))
    known = {trial_id for trial_id, _ in listed_trials(directory) or []}
    return _sweep(sweep, base, train, resume=(state["parent_run_id"], known))


def _sweep(sweep: SweepConfig, base: dict, train: TrainJob, resume: tuple[str, set[str]] | None = None) -> str:
    """Run the sweep; ``resume``: (its parent run id, the trial ids of Tune's stored list)."""
    base_cfg = trial_config(base, sweep.set, {})
    uri = resolve_tracking_uri(base_cfg.mlflow.tracking_uri)
    parent = RunTracker(uri, base_cfg.mlflow.experiment, outage_s=base_cfg.mlflow.outage_s)
    if resume:
        parent.run_id = resume[0]
        parent.resume()
    else:
        parent.start(f"sweep-{sweep.name}", {f"sweep.{k}": v for k, v in _sweep_params(sweep).items()},
                     {"adcs.sweep": sweep.name, "adcs.dataset": base_cfg.data.name},
                     f"Ray Tune sweep of {grid_size(sweep)} trials ({sweep.search_alg}) over "
                     f"{', '.join(sweep.search)}")
    output_dir = storage.join(base_cfg.train.output_dir)  # a URI stays one; a path is made absolute
    with parent:
        # the same Ray start-up as adcs train, plus the trial drivers' custom resource
        started = connect(base_cfg, resources={DRIVER_RESOURCE: 1000})
        try:
            check_sweep_store(uri, base_cfg.ray.num_workers > 0)
            lost = _lost_runs(parent, sweep.name, resume[1]) if resume else None
            tuner = _tuner(sweep, base, uri, parent.run_id, output_dir, base_cfg, train, resume is not None, lost)
            results = tuner.fit()
            if lost is not None and (left := ray.get(lost.unclaimed.remote())):
                say(f"sweep {sweep.name}: no trial proposed the values of the lost runs {', '.join(left)} again: "
                    f"they stay under the parent run (one that was cut off is closed KILLED)")
        finally:
            if started:
                ray.shutdown()
        children = _close_children(parent, results)
        _log_summary(parent, sweep, base, results, children)
    say(f"sweep {sweep.name}: {len(results)} trials; MLflow parent run {parent.run_id} at {uri}")
    return parent.run_id


def _lost_runs(parent: RunTracker, name: str, listed: set[str]):
    """A ``LostRuns`` actor holding the child runs whose trials Tune's stored list lost, or None."""
    lost = find_lost(parent.client, parent.experiment_id, parent.run_id, listed)
    if not lost:
        return None
    say(f"sweep {name}: {sum(map(len, lost.values()))} trial run(s) started after Tune's last save of its trial "
        f"list; the trials that propose their values again take them up")
    return LostRunsActor.remote(lost)


def _sweep_params(sweep: SweepConfig) -> dict:
    return {"search": sweep.search, "search_alg": sweep.search_alg, "set": sweep.set, "num_samples": sweep.num_samples,
            "scheduler": sweep.scheduler, "metric": sweep.metric, "max_concurrent_trials": sweep.max_concurrent_trials,
            **({"pbt": asdict(sweep.pbt)} if sweep.scheduler == "pbt" else {})}


def _tuner(sweep: SweepConfig, base: dict, uri: str, parent_run_id: str, output_dir: str, base_cfg, train: TrainJob,
           resume: bool, lost=None) -> tune.Tuner:
    resources = trial_resources(base_cfg.ray.num_workers > 0, sweep.trial_cpus)
    fn = tune.with_resources(partial(run_trial, train=train, base=base, fixed=sweep.set, parent_run_id=parent_run_id,
                                     uri=uri, output_dir=output_dir, trial_cpus=sweep.trial_cpus,
                                     checkpoints=sweep.scheduler == "pbt", lost=lost), resources)
    directory = storage.join(output_dir, "tune", f"sweep-{parent_run_id}")
    if resume:  # the stored experiment: its searcher's state, scheduler and callbacks (the trials bar)
        return tune.Tuner.restore(directory, fn, resume_unfinished=True, resume_errored=False)
    say(f"sweep {sweep.name}: {grid_size(sweep)} trials ({sweep.search_alg}); Tune experiment {directory} "
        f"(continue a killed sweep with: adcs sweep --resume {directory})")
    _write_state(directory, {**sweep_state(sweep, base), "parent_run_id": parent_run_id})
    space = {"params": {key: SAMPLERS[kind](values) for key, spec in sweep.search.items()
                        for kind, values in spec.items()}}
    searcher = SEARCHERS[sweep.search_alg]
    # Tune's advice for PBT, reuse_actors, would start a trial's job again in the process where
    # Tune stopped its training thread mid-job: each restart is a new process instead
    warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
    return tune.Tuner(
        fn, param_space=space,
        tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, scheduler=make_scheduler(sweep, base),
                                    search_alg=searcher(base_cfg.seed) if searcher else None,
                                    num_samples=sweep.num_samples, max_concurrent_trials=sweep.max_concurrent_trials),
        run_config=tune.RunConfig(name=f"sweep-{parent_run_id}", storage_path=storage.join(output_dir, "tune"),
                                  verbose=0, callbacks=[TrialsBar(grid_size(sweep), sweep.name)],
                                  # PBT copies a trial's latest checkpoints; ASHA and FIFO report none
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=3)))


def _write_state(directory: str, state: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / STATE_FILE).write_text(json.dumps(state, indent=1))
        storage.upload(Path(tmp) / STATE_FILE, storage.join(directory, STATE_FILE))


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
    """The Tune trial id of a child run (its tag)."""
    return run.data.tags.get(TRIAL_TAG, "")


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
