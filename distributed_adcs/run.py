"""``adcs train``: build the job's plan once, decide where it runs, and hand it down.

Where a job runs is the one thing decided here (:class:`JobPlan`):

- ``process``: every epoch in this process (``ray.num_workers: 0``), selection either in
  this process too or on Ray embedding actors (``ray.num_actors``);
- ``ray_train``: a Ray Train job of ``ray.num_workers`` DDP workers (``distributed/driver.py``).

Everything else belongs to its layer: the run's name, tags, resume and artifacts to
``tracking.job_run``, the epoch loop to ``engine.loop``, Ray to ``distributed``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

from . import console, storage
from .config import JobConfig, UsageError
from .console import say
from .engine.build import describe_job_data, load_job_splits
from .engine.runtime import Interrupted, interruption, seed_everything
from .methods import MethodSpec, get_method

Where = Literal["process", "ray_train"]
SelectionSite = Literal["none", "process", "actors", "records"]


@dataclass(frozen=True)
class JobPlan:
    """What runs where, decided once from the config."""

    cfg: JobConfig
    method: MethodSpec
    where: Where
    selection: SelectionSite  # where coreset selection runs ("records": the Job draws from its records)
    started_at: float = field(default_factory=time.time)  # when the job was asked for: its start-up counts from here

    @classmethod
    def of(cls, cfg: JobConfig) -> "JobPlan":
        method = get_method(cfg.coreset.method)
        where: Where = "ray_train" if cfg.ray.num_workers > 0 else "process"
        site: SelectionSite = ("none" if method.trains_on_all else "records" if method.needs_records else
                               "actors" if method.needs_embeddings and cfg.ray.num_actors > 0 else "process")
        return cls(cfg, method, where, site)


def train(cfg: JobConfig, *, resume: str | None = None, parent_run_id: str | None = None,
          callbacks: Sequence = (), tags: Mapping[str, str] | None = None, start_from: Path | None = None) -> str:
    """Run a whole training job and return its MLflow run id (the job's entry for ``adcs train``,
    ``adcs sweep`` and the Python API, ``api.train``).

    It seeds the process's random streams (``seed``) and installs no signal handler: ``adcs``
    turns SIGTERM into an interruption itself, and the API puts back what the job changed.

    Args:
        resume: an MLflow run id or a checkpoint path to continue from.
        parent_run_id: nest this job's run under another (a sweep).
        callbacks: objects with ``on_epoch(epoch, metrics)``, called after each epoch's metrics
            are recorded, wherever the job runs (``tracking.epochs.EpochHook``: on the Ray
            Train path they run in its controller, so they must pickle).
        tags: more MLflow tags for the run (a sweep's trial id).
        start_from: with ``resume`` (a run id), the checkpoint file to continue that run from instead
            of its own (a sweep's PBT exploit: another trial's, ``tracking.job_run.JobRun.open``).
    """
    from .tracking.stores import check_tracking_uri, resolve_tracking_uri, store_warnings
    from .tracking.job_run import JobRun

    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri)
    joining = bool(cfg.ray.address or os.environ.get("RAY_ADDRESS"))  # as distributed.cluster.connect decides
    for warning in store_warnings(uri, joining):
        say(f"warning: {warning}", err=True)
    seed_everything(cfg.seed, cfg.deterministic)
    plan = JobPlan.of(cfg)
    try:  # everything that can fail on bad input, before any run (or store) is created
        check_tracking_uri(uri)
        try:
            storage.check_writable(cfg.train.output_dir)
        except ValueError as err:
            raise UsageError(f"train.output_dir: {err}") from None
        if cfg.ray.address:
            from .distributed.cluster import check_address

            check_address(cfg.ray.address)
        # a Ray Train job's driver trains on no image: it reads the data's description only
        splits = load_job_splits(cfg) if plan.where == "process" else describe_job_data(cfg)
        run = JobRun.open(cfg, resume=resume, parent_run_id=parent_run_id, tags=tags, data=splits.files,
                          start_from=start_from)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    with run.tracker:
        log = console.move_log(run.checkpoint_dir)  # the console capture's log, if any: the run's now
        say(header_line(plan, splits, run))
        try:
            run.log_config()
            with console.epoch_bar(cfg.train.epochs):
                RUNNERS[plan.where](plan, splits, run, run.recorder(splits.num_classes, callbacks))
            run.finish_job()
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (adcs: raise_on_sigterm): the run is KILLED
            raise Interrupted(getattr(err, "signum", signal.SIGINT), run.interrupted_message(err)) from None
        except Exception as err:  # a signal inside cleanup code, masked by the cleanup's own error
            cause = interruption(err)
            if cause is None:
                raise
            raise Interrupted(getattr(cause, "signum", signal.SIGINT), run.interrupted_message(cause)) from None
        finally:  # a failed run keeps its log too
            if log is not None:
                sys.stdout.flush()
                sys.stderr.flush()
                run.tracker.log_artifact(log, "logs")
    say(run.finished_message(log))
    return run.tracker.open_run_id


def header_line(plan: JobPlan, splits, run) -> str:
    """What runs, on what, and where MLflow records it: the first line a job prints."""
    cfg = plan.cfg
    what = ("full adversarial training" if plan.method.trains_on_all
            else f"{cfg.coreset.method} coreset ({cfg.coreset.fraction:.0%})")
    device = "GPU" if cfg.ray.use_gpu else "CPU"
    if plan.where == "ray_train":
        where = f"Ray Train, {cfg.ray.num_workers} worker{'s' * (cfg.ray.num_workers > 1)} on {device}"
    else:
        where = f"this process ({cfg.train.device})"
        if plan.selection == "actors":
            where += f", selection on {cfg.ray.num_actors} Ray actor{'s' * (cfg.ray.num_actors > 1)}"
    verb = "resumes" if run.resume_checkpoint is not None else "records"
    return (f"adcs train: {what}, {cfg.objective.name} eps={cfg.objective.epsilon:g}, {cfg.model.name} on "
            f"{cfg.data.name} ({splits.num_train:,} training images), {cfg.train.epochs} epochs, {where}; "
            f"MLflow {verb} run {run.tracker.run_id} (experiment '{cfg.mlflow.experiment}', {run.tracker.uri})")


def _in_process(plan: JobPlan, splits, run, recorder) -> None:
    from .engine.checkpoint import load_checkpoint
    from .engine.job import Job
    from .engine.loop import run_epochs
    from .engine.runtime import resolve_device
    from .engine.selection import local_selector
    from .tracking.system import system_metrics

    with system_metrics(run.system_metrics):  # this process's machine, its final evaluation included
        device = resolve_device(plan.cfg.train.device)
        job = Job(plan.cfg, splits, device)
        job.started_at = plan.started_at
        with ExitStack() as stack:
            if plan.selection == "actors":
                from .distributed.actors import actor_selector

                job.selector = stack.enter_context(actor_selector(plan.cfg, splits))
            elif plan.selection == "process":
                job.selector = local_selector(plan.cfg, splits, device)
            if run.resume_checkpoint is not None:
                job.restore(load_checkpoint(run.resume_checkpoint))  # on the CPU: restore() moves what it loads
            run_epochs(job, run.process_sink(recorder, splits.train))
        recorder.final(job.final_evaluation(), job.test_outcomes)  # after the actors are released


def _on_ray_train(plan: JobPlan, splits, run, recorder) -> None:
    from .distributed.driver import run_trainer

    # a local copy of the last checkpoint where the run's directory is on this machine
    run_trainer(plan.cfg, recorder, run.ray_storage, None if run.checkpoint_uri else run.last_checkpoint,
                resume_from=run.resume_checkpoint, started_at=plan.started_at, system_metrics=run.system_metrics)


RUNNERS: dict[Where, Callable[..., None]] = {"process": _in_process, "ray_train": _on_ray_train}

__all__ = ["JobPlan", "RUNNERS", "train"]
