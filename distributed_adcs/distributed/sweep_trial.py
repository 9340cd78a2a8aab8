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

PBT (``scheduler: pbt``): each epoch's report carries the job's checkpoint and a note of the
trial that wrote it (:data:`NOTE`). A trial that Tune restarts with another trial's
checkpoint (an exploit) continues its own run from that checkpoint, with its new values: it
records the exploit first (:func:`record_exploit`), and the checkpoint, of the same epoch as the
run's last (Tune's PBT runs synchronous), keeps the run's steps one per epoch.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import ray
import torch
from ray import tune

from .. import storage
from ..sweep_config import trial_config
from ..tracking.epochs import CHECKPOINT_FILE
from ..tracking.job_run import NothingToResume, run_name

TRIAL_TAG = "adcs.sweep_trial"  # a child run's Tune trial id
VALUES_TAG = "adcs.sweep_values"  # the values Tune proposed for it, canonical JSON (values_key)
LOST_TAG = "adcs.sweep_lost_trial"  # on a run taken up by a replaying trial: the trial Tune lost
EXPLOIT_TAG = "adcs.pbt.exploit"  # + ".epochNNN": one tag per exploit (JSON: donor trial and run, values)
# PBT's time attribute: epochs completed, the last one not counted, so that no perturbation (which
# restarts every trial) falls after the last epoch, when no epoch is left to train
PBT_CLOCK = "pbt_epochs"
NOTE = "adcs_trial.json"  # beside a reported checkpoint: the trial that wrote it, epochs completed
TrainJob = Callable[..., str]  # the signature of distributed_adcs.run.train


def trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str):
    """The MLflow run of one trial of the sweep whose parent run is ``parent_run_id``, or None."""
    query = f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'"
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1)
    return runs[0] if runs else None


def values_key(params: dict) -> str:
    """The values a trial was proposed with, as one string that equal values share."""
    return json.dumps(params, sort_keys=True, default=str)


def adopt(client, run_id: str, trial_id: str, name: str):
    """Make the lost run ``run_id`` the run of trial ``trial_id`` (named ``name``); returns it."""
    client.set_tag(run_id, LOST_TAG, client.get_run(run_id).data.tags.get(TRIAL_TAG, ""))
    client.set_tag(run_id, TRIAL_TAG, trial_id)
    client.update_run(run_id, name=name)
    return client.get_run(run_id)


def run_trial(config: dict, *, train: TrainJob, base: dict, fixed: dict, parent_run_id: str, uri: str,
              output_dir: str, trial_cpus: float, checkpoints: bool = False, lost=None) -> None:
    """The function trainable (``functools.partial`` binds everything but Tune's ``config``);
    with ``checkpoints`` (PBT) each epoch's report carries the job's checkpoint; ``lost``, on a
    resumed sweep, the ``sweep_lost.LostRuns`` actor that hands out runs Tune lost."""
    from mlflow.tracking import MlflowClient

    cfg = trial_config(base, fixed, config["params"])  # (after a PBT exploit: the new values)
    trial_id = tune.get_context().get_trial_id()
    cfg.mlflow.tracking_uri, cfg.train.output_dir = uri, output_dir  # trial actors change directory
    cfg.mlflow.run_name = f"{run_name(cfg)}-{trial_id}"
    cfg.ray.address = None  # already inside the sweep's Ray
    torch.set_num_threads(max(1, int(trial_cpus)))  # (a Ray Train trial computes nothing in this process)
    client = MlflowClient(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    earlier = trial_run(client, experiment_id, parent_run_id, trial_id)
    if earlier is None and lost is not None:
        claimed = ray.get(lost.claim.remote(values_key(config["params"])))
        if claimed is not None:
            earlier = adopt(client, claimed, trial_id, cfg.mlflow.run_name)
    if earlier is not None and earlier.info.status == "FINISHED":
        tune.report({**earlier.data.metrics, "epoch": cfg.train.epochs - 1, PBT_CLOCK: cfg.train.epochs - 1})
        return
    hook = TuneEpochReport(cfg.train.epochs if checkpoints else None)
    job = dict(parent_run_id=parent_run_id, callbacks=[hook], tags={TRIAL_TAG: trial_id})
    given = tune.get_checkpoint()  # Tune's, when it restarts this trial: its own or (PBT) a donor's
    if given is not None and earlier is not None:
        with tempfile.TemporaryDirectory() as tmp:
            note = json.loads(Path(given.to_directory(tmp), NOTE).read_text())
            if note["trial_id"] != trial_id:  # an exploit: the donor's weights, this trial's run and values
                donor = trial_run(client, experiment_id, parent_run_id, note["trial_id"])
                record_exploit(client, earlier.info.run_id, note, donor.info.run_id if donor else "", config["params"])
                train(cfg, resume=earlier.info.run_id, start_from=Path(tmp, CHECKPOINT_FILE), **job)
                return
    if earlier is not None:
        try:
            train(cfg, resume=earlier.info.run_id, **job)
            return
        except NothingToResume:  # cut off before its first checkpoint: nothing worth keeping
            client.delete_run(earlier.info.run_id)
    train(cfg, **{**job, "tags": {TRIAL_TAG: trial_id, VALUES_TAG: values_key(config["params"])}})


def record_exploit(client, run_id: str, note: dict, donor_run_id: str, params: dict) -> None:
    """An exploit in the trial's run (whose params, immutable, keep the first values): a tag with
    the donor and the values from now on, and each numeric value as metric ``pbt.<key>`` at the
    first step trained with it."""
    epoch = int(note["epoch"])
    client.set_tag(run_id, f"{EXPLOIT_TAG}.epoch{epoch:03d}",
                   json.dumps({"donor_trial": note["trial_id"], "donor_run": donor_run_id, "epoch": epoch,
                               "values": params}))
    for key, value in params.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            client.log_metric(run_id, f"pbt.{key}", float(value), step=epoch)


class TuneEpochReport:
    """The trials' epoch hook: each epoch's metrics to the Tune trial that runs the job.

    An in-process job calls it in the trial itself. A Ray Train job calls it in the Train
    controller, another process, which reaches the trial through the queue that Tune's own
    ``TuneReportCallback`` holds: that callback is made (in the trial, where it must be) when
    this hook is pickled for the controller, so an in-process trial starts no queue actor.

    With ``pbt_epochs``, the job's epochs (PBT; in-process trials only: Tune's queue carries no
    checkpoint), each report carries the epoch's checkpoint (the recorder hands it,
    ``takes_checkpoint``) with a note of who wrote it (:data:`NOTE`), and PBT's clock
    (:data:`PBT_CLOCK`).
    """

    def __init__(self, pbt_epochs: int | None = None):
        self._queue = None
        self.pbt_epochs = pbt_epochs
        self.takes_checkpoint = pbt_epochs is not None

    def __getstate__(self) -> dict:
        from ray.tune.integration.ray_train import TuneReportCallback

        return {"_queue": self._queue or TuneReportCallback(), "pbt_epochs": None, "takes_checkpoint": False}

    def on_epoch(self, epoch: int, metrics: dict[str, float], checkpoint: str | None = None) -> None:
        row = {**metrics, "epoch": epoch}
        if self._queue is not None:
            self._queue.after_report(None, [row], None)
        elif checkpoint is None or self.pbt_epochs is None:
            tune.report(row)
        else:  # Tune copies the directory into its experiment before report returns
            row[PBT_CLOCK] = min(epoch + 1, self.pbt_epochs - 1)
            with tempfile.TemporaryDirectory() as tmp:
                storage.download(checkpoint, Path(tmp, CHECKPOINT_FILE))
                note = {"trial_id": tune.get_context().get_trial_id(), "epoch": epoch + 1}
                Path(tmp, NOTE).write_text(json.dumps(note))
                tune.report(row, checkpoint=tune.Checkpoint.from_directory(tmp))
