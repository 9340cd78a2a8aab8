"""One trial of ``adcs sweep``: a Ray Tune function trainable that runs a whole training job.

Train V2 refuses ``Tuner(TorchTrainer)``, so each trial calls the job entry point it is handed
(``adcs sweep`` hands it ``distributed_adcs.run.train``) and reports each epoch to Tune.

A trial's MLflow run is tagged with its Tune trial id (:data:`TRIAL_TAG`), which is how the
sweep finds it again: the driver to summarise it, and a trial that a resumed sweep
(``adcs sweep --resume``) runs again, to continue that run rather than open a second one.
A run that FINISHED is reported to Tune as it stands and not trained again (the driver may
have died before Tune's experiment state recorded that the trial had ended); one that was cut
off continues from its last checkpoint; one cut off before its first checkpoint is deleted and
the trial starts over.
"""

from __future__ import annotations

from typing import Callable

import torch
from ray import tune

from ..sweep_config import trial_config
from ..tracking.job_run import NothingToResume, run_name

TRIAL_TAG = "adcs.sweep_trial"  # a child run's Tune trial id
TrainJob = Callable[..., str]  # the signature of distributed_adcs.run.train


def trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str):
    """The MLflow run of one trial of the sweep whose parent run is ``parent_run_id``, or None."""
    query = f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'"
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1)
    return runs[0] if runs else None


def run_trial(config: dict, *, train: TrainJob, base: dict, fixed: dict, parent_run_id: str, uri: str,
              output_dir: str, trial_cpus: float) -> None:
    """The function trainable (``functools.partial`` binds everything but Tune's ``config``)."""
    from mlflow.tracking import MlflowClient

    cfg = trial_config(base, fixed, config["params"])
    trial_id = tune.get_context().get_trial_id()
    cfg.mlflow.tracking_uri, cfg.train.output_dir = uri, output_dir  # trial actors change directory
    cfg.mlflow.run_name = f"{run_name(cfg)}-{trial_id}"
    cfg.ray.address = None  # already inside the sweep's Ray
    torch.set_num_threads(max(1, int(trial_cpus)))  # (a Ray Train trial computes nothing in this process)
    client = MlflowClient(uri)
    earlier = trial_run(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id, trial_id)
    if earlier is not None and earlier.info.status == "FINISHED":
        tune.report({**earlier.data.metrics, "epoch": cfg.train.epochs - 1})
        return
    job = dict(parent_run_id=parent_run_id, callbacks=[TuneEpochReport()], tags={TRIAL_TAG: trial_id})
    if earlier is not None:
        try:
            train(cfg, resume=earlier.info.run_id, **job)
            return
        except NothingToResume:  # cut off before its first checkpoint: nothing worth keeping
            client.delete_run(earlier.info.run_id)
    train(cfg, **job)


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
