"""The MLflow side of one training job: its run's name, tags and description, where its
checkpoints live (a run tag), resuming a run, and logging its coresets and final plots.

These are tracking facts, kept here so that the entry point (``run.py``) only decides where
the job runs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import JobConfig, dump_yaml, flatten
from ..engine.plan import selection_epochs, warmup_epochs
from ..methods import get_method
from .artifacts import write_selection
from .mlflow_run import RunTracker
from .plots import log_accuracy_plot, log_coreset

CHECKPOINT_TAG = "adcs.checkpoint_dir"


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


def _resume_target(tracker: RunTracker, resume: str) -> tuple[str | None, Path | None, Path]:
    """``(run id or None, checkpoint directory or None, checkpoint file)`` of ``--resume``:
    a checkpoint file, a checkpoint directory, or an MLflow run id."""
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if path.is_file():
        return None, None, path
    try:
        run = tracker.client.get_run(resume)
    except Exception:
        raise FileNotFoundError(f"--resume {resume}: neither a checkpoint file nor a run in {tracker.uri}") from None
    ckpt_dir = run.data.tags.get(CHECKPOINT_TAG)
    if not ckpt_dir:
        raise FileNotFoundError(f"--resume {resume}: the run has no {CHECKPOINT_TAG} tag")
    return resume, Path(ckpt_dir), Path(ckpt_dir) / "last.pt"


@dataclass
class JobRun:
    """An open job run: its tracker, checkpoint directory and the checkpoint to resume from."""

    cfg: JobConfig
    tracker: RunTracker
    checkpoint_dir: Path
    resume_checkpoint: Path | None  # a checkpoint file to continue from, when it exists here

    @classmethod
    def open(cls, cfg: JobConfig, *, resume: str | None = None, parent_run_id: str | None = None,
             require_local_checkpoint: bool = True) -> "JobRun":
        """Create the run (or reopen the run named by ``resume``).

        Raises:
            FileNotFoundError: ``resume`` names nothing, or (``require_local_checkpoint``) its
                checkpoint file is missing; raised before any run is created or changed.
        """
        tracker = RunTracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
        run_id = ckpt_dir = ckpt = None
        if resume:
            run_id, ckpt_dir, ckpt = _resume_target(tracker, resume)
            if require_local_checkpoint and not ckpt.is_file():
                raise FileNotFoundError(f"--resume {resume}: no checkpoint at {ckpt}")
        if run_id:
            tracker.run_id = run_id
            tracker.resume()
        else:
            tracker.start(run_name(cfg), flatten(cfg), run_tags(cfg), run_description(cfg),
                          parent_run_id=parent_run_id)
        if ckpt_dir is None:  # a new run, or a checkpoint file given by path: this run's own directory
            ckpt_dir = (Path(cfg.train.output_dir) / tracker.run_id).resolve()
        tracker.set_tags({CHECKPOINT_TAG: str(ckpt_dir)})
        return cls(cfg, tracker, ckpt_dir, ckpt if ckpt is not None and ckpt.is_file() else None)

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    # the engine's Recorder protocol (engine/loop.py)
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.tracker.log_metrics(metrics, step=step)

    def log_selection(self, train, num_classes: int, selection) -> None:
        """The coreset as ``coresets/coreset_epochNNN.parquet`` and its class histogram."""
        with tempfile.TemporaryDirectory() as tmp:
            path = write_selection(Path(tmp) / f"coreset_epoch{selection.epoch:03d}.parquet", train, selection)
            log_coreset(self.tracker, path, num_classes)

    def log_config(self) -> None:
        self.tracker.log_text(dump_yaml(self.cfg), "config.yaml")

    def finish_job(self) -> None:
        """Log the last checkpoint and the accuracy plot (the run is closed by the tracker)."""
        self.tracker.log_artifact(self.last_checkpoint, "checkpoints")
        log_accuracy_plot(self.tracker, selection_epochs=selection_epochs(self.cfg.train.epochs, self.cfg.coreset),
                          warmup_epochs=warmup_epochs(self.cfg.coreset))

    def finished_message(self) -> str:
        t = self.tracker
        return (f"MLflow run {t.run_id} FINISHED in experiment '{self.cfg.mlflow.experiment}' at {t.uri}\n"
                f"  see it with: adcs ui   (or: mlflow ui --backend-store-uri {t.uri} --host 127.0.0.1)")
