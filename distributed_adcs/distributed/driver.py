"""The job driver for ``ray.num_workers >= 1``: one Ray Train job, selection included.

The driver opens the MLflow run, connects to Ray, checks that the cluster can hold the job's
workers (``resources.py``: a request that can never fit is one clear error, not an endless
wait), and runs one ``TorchTrainer`` for the whole job; its workers also run the selections
(see ``trainer.py``). ``storage_path`` may be a URI (``s3://``): what a multi-node Train job
needs, since every worker writes its checkpoints there.

Each ``fit`` has a trainer name of its own (``adcs-<run id>-<fit>``), so Ray Train never hands
a fit a checkpoint of an earlier one: that may be one the run never recorded (Ray Train stored
it, and the job died before the run named it; ``tracking/epochs.py``). Within a fit, a worker
group that fails restarts from the fit's last checkpoint (``ray.max_failures``). ``--resume``
starts from the run's last recorded checkpoint, which goes to the workers through the object
store, so no worker needs the driver's disk; once the fit ends, the earlier fits' directories
are deleted.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from .. import storage
from ..config import JobConfig, to_dict
from ..tracking.epochs import CHECKPOINT_FILE, EpochRecorder
from ..tracking.outbox import ServerUnreachable
from ..tracking.system import SystemMetrics
from .cluster import connect
from .reporter import MlflowReporter
from .resources import check_cluster, job_bundles
from .trainer import train_loop_per_worker
from .worker_sink import FAULT_ENV


def trainer_name(run_id: str, fit: str) -> str:
    return f"adcs-{run_id}-{fit}"


def run_trainer(cfg: JobConfig, recorder: EpochRecorder, storage_path: str, last: Path | None, *,
                resume_from: Path | None = None, started_at: float | None = None,
                system_metrics: SystemMetrics | None = None) -> bool:
    """Run the job's trainer (``storage_path``: Ray Train's, a path or URI), recording its epochs
    with ``recorder`` and each node's system metrics with ``system_metrics`` (None: none), and
    copy its last checkpoint to the local file ``last`` (if not None); return whether there was one."""
    name = trainer_name(recorder.run_id, uuid.uuid4().hex[:8])
    started = connect(cfg)
    try:
        check_cluster(cfg)
        (resources,) = {tuple(sorted(b.items())) for b in job_bundles(cfg)}
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": to_dict(cfg), "fit_called_at": time.time(), "job_started_at": started_at,
                               "fault": os.environ.get(FAULT_ENV), "system_metrics": system_metrics,
                               # the bytes, not a path: a worker on another node has no driver disk
                               "resume": ray.put(resume_from.read_bytes()) if resume_from else None},
            scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                         resources_per_worker=dict(resources)),
            torch_config=TorchConfig(backend="nccl" if cfg.ray.use_gpu else "gloo"),
            run_config=RunConfig(name=name, storage_path=storage_path,
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 # a worker group that cannot start within Ray's 60 s is retried
                                 # a bounded number of times (Ray's default: forever). The ignores: ray.train
                                 # picks Train v2's configs at run time, mypy reads the v1 names it imports first
                                 failure_config=FailureConfig(max_failures=cfg.ray.max_failures,  # type: ignore[call-arg]
                                                              controller_failure_limit=cfg.ray.startup_retries),
                                 callbacks=[MlflowReporter(recorder, storage_path, name)]))  # type: ignore[list-item]
        try:
            result = _fit(trainer)
        except Exception as err:  # the controller gave up on the tracking server: its one line, not Ray's wrapping
            failure = getattr(err, "controller_failure", None)
            if isinstance(failure, ServerUnreachable):
                raise failure from None
            raise
        if result.checkpoint is None:  # no epoch left to train: the run's checkpoint is the one it resumed from
            if last is not None and resume_from is not None and resume_from.resolve() != last.resolve():
                last.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(resume_from, last)
            return resume_from is not None
        _forget_other_fits(storage_path, name)
        if last is not None:
            with result.checkpoint.as_directory() as d:
                last.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(d) / CHECKPOINT_FILE, last)
        return True
    finally:
        if started:
            ray.shutdown()


def _forget_other_fits(storage_path: str, name: str) -> None:
    """Delete the directories of the run's earlier fits: the run's checkpoint is now this fit's."""
    for other in storage.list_dirs(storage_path):
        if other.startswith(name.rsplit("-", 1)[0] + "-") and other != name:
            storage.delete_dir(storage.join(storage_path, other))


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


__all__ = ["run_trainer", "trainer_name"]
