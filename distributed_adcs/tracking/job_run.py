"""The MLflow side of one training job: its run's name, tags and description, its directory,
resuming a run, and its config and final plots.

A run's directory (its ``adcs.checkpoint_dir`` tag) is ``train.output_dir/<run id>``, a local
directory or a URI (``s3://``, ``gs://``, ...); a resumed run keeps writing there when this
machine reaches it. Each epoch's checkpoint is recorded once (``tracking/epochs.py``: where,
and in what order); ``--resume <run id>`` continues from the last recorded one, found by
``epochs.find_checkpoint``, so a run resumes from another working directory or another node.
A run with no recorded checkpoint fails to resume, naming where it looked, rather than start
again at epoch 0.

These are tracking facts, kept here so that the entry point (``run.py``) only decides where
the job runs.
"""

from __future__ import annotations

import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .. import storage
from ..config import JobConfig, UsageError, dump_yaml, flatten
from ..data.types import DataFiles
from ..engine.checkpoint import check_fits, load_checkpoint
from ..engine.phases import selection_epochs, warmup_epochs
from ..methods import get_method
from .epochs import (CHECKPOINT_ARTIFACT, CHECKPOINT_FILE, CHECKPOINT_TAG, EpochRecorder, ProcessSink, find_checkpoint,
                     record_missing_metrics)
from .mlflow_run import RunTracker
from .plots import log_accuracy_plot
from .provenance import log_dataset, source_tags
from .system import SystemMetrics

HOME_TAG = "adcs.checkpoint_dir"  # the run's directory: where it writes its checkpoints


def local_checkpoint_dir(output_dir: str, run_id: str) -> Path:
    """Where this process writes ``last.pt``: ``output_dir/<run id>`` when that is local, else a
    directory of this machine's temporary space (the staging of its upload to the URI)."""
    if storage.is_local(output_dir):
        return storage.local_path(output_dir) / run_id
    return Path(tempfile.gettempdir()) / "adcs-checkpoints" / run_id


def run_name(cfg: JobConfig) -> str:
    if cfg.mlflow.run_name:
        return cfg.mlflow.run_name
    c = cfg.coreset
    method = c.method if get_method(c.method).trains_on_all else f"{c.method}{c.fraction:g}"
    return f"{cfg.data.name}-{cfg.objective.name}-{method}"


def run_tags(cfg: JobConfig) -> dict[str, str]:
    c = cfg.coreset
    fraction = 1.0 if get_method(c.method).trains_on_all else c.fraction
    return {"adcs.dataset": cfg.data.name, "adcs.objective": cfg.objective.name, "adcs.model": cfg.model.name,
            "adcs.method": c.method, "adcs.fraction": f"{fraction:g}"}


def run_description(cfg: JobConfig) -> str:
    c = cfg.coreset
    spec = get_method(c.method)
    what = (spec.summary if spec.trains_on_all else
            f"adversarial coreset training ({c.method}: {spec.summary}; {c.fraction:.0%} of the data, reselected "
            f"every {c.every} epochs after {c.warmup_epochs} warm-up epochs)")
    return (f"{what} of {cfg.model.name} on {cfg.data.name} with {cfg.objective.name} "
            f"(epsilon {cfg.objective.epsilon:g}) for {cfg.train.epochs} epochs")


def _resume_target(tracker: RunTracker, resume: str, output_dir: str) -> tuple[str | None, str | None, Path | None]:
    """``(run id or None, the run's directory (tag) or None, local checkpoint file or None)`` of
    ``--resume``: a checkpoint file, a checkpoint directory, or an MLflow run id.

    For a run id, its last recorded checkpoint (``epochs.find_checkpoint``; a copy from a URI or
    from MLflow lands in this machine's directory of the run); None when nowhere holds one.
    """
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if path.is_file():
        return None, None, path
    try:
        run = tracker.client.get_run(resume)
    except Exception:
        raise FileNotFoundError(f"--resume {resume}: neither a checkpoint file nor a run in {tracker.uri}") from None
    tagged = run.data.tags.get(HOME_TAG)
    if tagged and _reachable_home(tagged) and storage.is_local(tagged):  # this machine holds the run's directory
        here = storage.local_path(tagged)
    else:
        here = local_checkpoint_dir(tagged if tagged and not storage.is_local(tagged) else output_dir, resume)
    return resume, tagged, find_checkpoint(tracker.client, resume, here)


def _reachable_home(tagged: str | None) -> bool:
    """The tagged checkpoint location is one this process can keep writing to: a URI, or a
    local directory that exists here (not the directory of another node or working copy)."""
    if not tagged:
        return False
    return not storage.is_local(tagged) or storage.local_path(tagged).is_dir()


def _nowhere(tracker: RunTracker, resume: str) -> str:
    named = tracker.client.get_run(resume).data.tags.get(CHECKPOINT_TAG)
    return (f"--resume {resume}: no recorded checkpoint, neither where the run's {CHECKPOINT_TAG} tag says "
            f"({named or 'no such tag'}) nor in its MLflow artifacts ({CHECKPOINT_ARTIFACT}); it cannot continue")


class NothingToResume(UsageError):
    """``--resume`` names a run that recorded no checkpoint (cut off before its first one): it
    cannot continue. Raised for this case only, so that a caller may start the job afresh
    (benchmarks/quality/runner.py) while every other error still surfaces."""


@dataclass
class JobRun:
    """An open job run: its tracker, checkpoint directory and the checkpoint to resume from."""

    cfg: JobConfig
    tracker: RunTracker
    checkpoint_dir: Path  # local: last.pt after every epoch (the staging of its upload when checkpoint_uri)
    resume_checkpoint: Path | None  # a checkpoint file to continue from, when it exists here
    checkpoint_uri: str | None = None  # remote train.output_dir/<run id>: where the checkpoints go
    logged_models: list = field(default_factory=list)  # model_log.LoggedModel of finish_job

    @classmethod
    def open(cls, cfg: JobConfig, *, resume: str | None = None, parent_run_id: str | None = None,
             tags: Mapping[str, str] | None = None, data: DataFiles | None = None,
             start_from: Path | None = None) -> "JobRun":
        """Create the run (or reopen the run named by ``resume``; it first records the metrics its
        checkpoint carries if the run lacks them, see ``epochs.record_missing_metrics``), tagged
        with ``tags`` besides its own. A new run is tagged with its code's source
        (``provenance.source_tags``); ``data``, the files of the job's training set, is logged as
        its dataset input. ``start_from``, a checkpoint file, replaces the checkpoint of the run
        that ``resume`` names (a sweep's PBT exploit: another trial's; the run records none of its
        metrics).

        Raises:
            FileNotFoundError: ``resume`` names nothing (neither a checkpoint file nor a run).
            NothingToResume: ``resume`` names a run without a recorded checkpoint.
            Both are raised before any run is created or changed.
        """
        tracker = RunTracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, outage_s=cfg.mlflow.outage_s)
        run_id = tagged = ckpt = payload = None
        output = cfg.train.output_dir
        if resume:
            run_id, tagged, ckpt = _resume_target(tracker, resume, output)
            ckpt = start_from or ckpt
            if ckpt is None:
                raise NothingToResume(_nowhere(tracker, resume))
            payload = load_checkpoint(ckpt)  # a file that is no checkpoint, or another job's, fails before the run opens
            check_fits(payload, dump_yaml(cfg), f"--resume {resume}")
        if run_id:
            tracker.run_id = run_id
            tracker.resume()
            assert payload is not None  # a run id comes from --resume, whose checkpoint was loaded above
            if start_from is None:
                record_missing_metrics(tracker, payload)
        else:
            tracker.start(run_name(cfg), flatten(cfg), {**source_tags(), **run_tags(cfg)}, run_description(cfg),
                          parent_run_id=parent_run_id)
        log_dataset(tracker.client, tracker.open_run_id, cfg.data.name, data)
        # a run keeps writing where it wrote (its tag), else where this config says
        home = tagged if _reachable_home(tagged) else None
        if home is None:
            home = (storage.join(output, tracker.open_run_id) if not storage.is_local(output)
                    else str(local_checkpoint_dir(output, tracker.open_run_id)))
        remote = None if storage.is_local(home) else home
        ckpt_dir = local_checkpoint_dir(remote, tracker.open_run_id) if remote else storage.local_path(home)
        tracker.set_tags({**(tags or {}), HOME_TAG: home})
        return cls(cfg, tracker, ckpt_dir, ckpt, remote)

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / CHECKPOINT_FILE

    @property
    def system_metrics(self) -> SystemMetrics | None:
        """Where this run's system metrics go (``tracking/system.py``); None when they are off."""
        return SystemMetrics.of(self.cfg.mlflow, self.tracker.uri, self.tracker.open_run_id)

    @property
    def ray_storage(self) -> str:
        """Ray Train's ``storage_path`` for this run: shared by every node when it is a URI."""
        return storage.join(self.checkpoint_uri, "ray") if self.checkpoint_uri else str(self.checkpoint_dir / "ray")

    def recorder(self, num_classes: int, hooks=()) -> EpochRecorder:
        """What records this job's epochs (in this process, or a copy in a Ray Train controller)."""
        return EpochRecorder(self.tracker.uri, self.tracker.open_run_id, num_classes, self.cfg.train.epochs, hooks,
                             tracker=self.tracker)

    def process_sink(self, recorder: EpochRecorder, train) -> ProcessSink:
        """``engine.loop.run_epochs``' sink for a job that trains in this process."""
        return ProcessSink(recorder, train, self.last_checkpoint, self.checkpoint_uri)

    def log_config(self) -> None:
        self.tracker.log_text(dump_yaml(self.cfg), "config.yaml")

    def finish_job(self) -> None:
        """Log the accuracy plot and, with ``mlflow.log_model``, the models of the run's last
        recorded checkpoint (``model_log.py``): after the final evaluation, on both paths, once
        (the last epoch recorded its checkpoint; the tracker closes the run). The plot reads the
        run's metrics back: they are all delivered first."""
        self.tracker.flush()
        log_accuracy_plot(self.tracker, selection_epochs=selection_epochs(self.cfg.train.epochs, self.cfg.coreset),
                          warmup_epochs=warmup_epochs(self.cfg.coreset))
        if not self.cfg.mlflow.log_model:
            return
        from ..console import say
        from ..engine.saved_models import SHAPE_KEY
        from .model_log import log_job_models

        found = find_checkpoint(self.tracker.client, self.tracker.open_run_id, self.checkpoint_dir)
        if found is None:  # every finished job recorded one
            raise RuntimeError(f"run {self.tracker.run_id} recorded no checkpoint: no model to log")
        payload = load_checkpoint(found)
        if SHAPE_KEY not in payload:  # a resumed job with no epoch left, whose checkpoint predates model_shape
            say(f"warning: no model logged: the run's checkpoint {found} predates model_shape "
                f"(adcs evaluate --run {self.tracker.run_id} still evaluates it)", err=True)
            return
        self.logged_models = log_job_models(self.tracker, self.cfg, payload)

    def interrupted_message(self, err: BaseException) -> str:
        how = {signal.SIGINT: "interrupted (SIGINT)", signal.SIGTERM: "terminated (SIGTERM)"}.get(
            getattr(err, "signum", signal.SIGINT), "interrupted")
        return (f"{how}: MLflow run {self.tracker.run_id} is marked KILLED; its checkpoints are kept, "
                f"continue it with the same command and --resume {self.tracker.run_id}")

    def finished_message(self, log: Path | None = None) -> str:
        t = self.tracker
        text = (f"MLflow run {t.run_id} FINISHED in experiment '{self.cfg.mlflow.experiment}' at {t.uri}\n"
                f"  see it with: adcs ui   (or: mlflow ui --backend-store-uri {t.uri} --host 127.0.0.1)")
        for m in self.logged_models:
            text += f"\n  {'best' if m.which == 'best' else 'last'} model: {m.uri}"
            if m.version is not None:
                text += f" (registered: models:/{self.cfg.mlflow.registered_model}/{m.version})"
        if log is not None:
            text += f"\n  Ray's and Train's log: {log} (artifact logs/{log.name})"
        return text
