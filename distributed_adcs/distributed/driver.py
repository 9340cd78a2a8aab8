"""The job driver for ``ray.num_workers >= 1``: one Ray Train job, selection included.

The driver opens the MLflow run, connects to Ray, checks that the cluster can hold the job's
workers (``resources.py``: a request that can never fit is one clear error, not an endless
wait), and runs one ``TorchTrainer`` for the whole job; its workers also run the selections
(see ``trainer.py``). ``--resume`` reruns the trainer with the same ``RunConfig(name,
storage_path)``, which makes Ray Train hand every worker the job's last checkpoint; a
checkpoint found elsewhere (a file, the run's MLflow artifact) goes to the workers through the
object store, so no worker needs the driver's disk. ``storage_path`` may be a URI (``s3://``):
what a multi-node Train job needs, since every worker writes its checkpoints there.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from ..config import JobConfig, to_dict
from ..data import DataSummary, Splits
from ..tracking import RunTracker
from .cluster import connect
from .reporter import MlflowReporter
from .resources import check_cluster, job_bundles
from .trainer import CHECKPOINT_FILE, FAULT_ENV, train_loop_per_worker

STORAGE_TAG = "adcs.ray_storage"


def trainer_name(run_id: str) -> str:
    return f"adcs-{run_id}"  # stable across resumes: no timestamps


def run_trainer(cfg: JobConfig, splits: Splits | DataSummary, tracker: RunTracker, storage: str, last: Path, *,
                resume_from: Path | None = None, callbacks=(), started_at: float | None = None,
                checkpoint_uri: str | None = None) -> bool:
    """Run the job's trainer (``storage``: Ray Train's ``storage_path``, a path or URI) and copy
    its last checkpoint to the local file ``last``; return whether there was one.
    ``checkpoint_uri``: the run's remote directory, which gets ``last.pt`` after every epoch."""
    started = connect(cfg)
    try:
        check_cluster(cfg)
        (resources,) = {tuple(sorted(b.items())) for b in job_bundles(cfg)}
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": to_dict(cfg), "fit_called_at": time.time(), "job_started_at": started_at,
                               "fault": os.environ.get(FAULT_ENV),
                               # the bytes, not a path: a worker on another node has no driver disk
                               "resume": ray.put(resume_from.read_bytes()) if resume_from else None},
            scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                         resources_per_worker=dict(resources)),
            torch_config=TorchConfig(backend="nccl" if cfg.ray.use_gpu else "gloo"),
            run_config=RunConfig(name=trainer_name(tracker.run_id), storage_path=storage,
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 # a worker group that cannot start within Ray's 60 s is retried
                                 # a bounded number of times (Ray's default: forever)
                                 failure_config=FailureConfig(max_failures=cfg.ray.max_failures,
                                                              controller_failure_limit=cfg.ray.startup_retries),
                                 callbacks=[MlflowReporter(tracker.uri, cfg.mlflow.experiment, tracker.run_id, splits.num_classes,
                                                           cfg.train.epochs, checkpoint_uri=checkpoint_uri),
                                            *callbacks]))
        result = _fit(trainer)
        if result.checkpoint is None:
            return False
        with result.checkpoint.as_directory() as d:  # a local copy when the storage is remote
            last.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(d) / CHECKPOINT_FILE, last)
        return True
    finally:
        if started:
            ray.shutdown()


def _fit(trainer: TorchTrainer):
    """``trainer.fit()``, from a helper thread when called from the main one.

    Ray Train installs its own SIGINT handler when ``fit`` runs in the main thread: it asks the
    controller to abort and then leaves by ``sys.exit(0)``, so a Ctrl-C would end the job as a
    normal exit (the MLflow run FAILED, nothing said). From another thread (as under Tune) it
    installs none: Ctrl-C (and SIGTERM, see ``engine.runtime``) reaches this thread as a
    KeyboardInterrupt, the run is marked KILLED, and ``ray.shutdown`` takes the controller and
    its workers down with the driver that owns them.
    """
    if threading.current_thread() is not threading.main_thread():
        return trainer.fit()
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # handed to the main thread
            outcome["error"] = err

    thread = threading.Thread(target=fit, name="adcs-trainer-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)  # a signal interrupts the main thread here
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


__all__ = ["run_trainer", "trainer_name", "STORAGE_TAG"]
