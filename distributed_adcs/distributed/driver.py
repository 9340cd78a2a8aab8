"""The job driver for ``ray.num_workers >= 1``: one Ray Train job, selection included.

The driver opens the MLflow run, connects to Ray, checks that the cluster can hold the job's
workers (``resources.py``: a request that can never fit is one clear error, not an endless
wait), and runs one ``TorchTrainer`` for the whole job; its workers also run the selections
(see ``trainer.py``). ``--resume`` reruns the trainer with the same ``RunConfig(name,
storage_path)``, which makes Ray Train hand every worker the job's last checkpoint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from ..config import JobConfig, to_dict
from ..data import Splits
from ..tracking import RunTracker
from .cluster import connect
from .reporter import MlflowReporter
from .resources import check_cluster, job_bundles
from .trainer import CHECKPOINT_FILE, FAULT_ENV, train_loop_per_worker

STORAGE_TAG = "adcs.ray_storage"


def trainer_name(run_id: str) -> str:
    return f"adcs-{run_id}"  # stable across resumes: no timestamps


def run_trainer(cfg: JobConfig, splits: Splits, tracker: RunTracker, storage: Path, *,
                resume_path: str | None = None, callbacks=(), started_at: float | None = None) -> Path | None:
    """Start actors and the trainer, wait for the job, return the last checkpoint file."""
    started = connect(cfg)
    try:
        check_cluster(cfg)
        (resources,) = {tuple(sorted(b.items())) for b in job_bundles(cfg)}
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": to_dict(cfg), "fit_called_at": time.time(), "job_started_at": started_at,
                               "fault": os.environ.get(FAULT_ENV), "resume_path": resume_path},
            scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                         resources_per_worker=dict(resources)),
            torch_config=TorchConfig(backend="nccl" if cfg.ray.use_gpu else "gloo"),
            run_config=RunConfig(name=trainer_name(tracker.run_id), storage_path=str(storage),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 # a worker group that cannot start within Ray's 60 s is retried
                                 # a bounded number of times (Ray's default: forever)
                                 failure_config=FailureConfig(max_failures=cfg.ray.max_failures,
                                                              controller_failure_limit=cfg.ray.startup_retries),
                                 callbacks=[MlflowReporter(tracker.uri, cfg.mlflow.experiment, tracker.run_id, splits.num_classes,
                                                           cfg.train.epochs),
                                            *callbacks]))
        result = trainer.fit()
        if result.checkpoint is None:
            return None
        return Path(result.checkpoint.path) / CHECKPOINT_FILE
    finally:
        if started:
            ray.shutdown()


__all__ = ["run_trainer", "trainer_name", "STORAGE_TAG"]
