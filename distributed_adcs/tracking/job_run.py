"""The MLflow side of one training job: its run's name, tags and description, where its
checkpoints live (a run tag), resuming a run, and logging its coresets and final plots.

Checkpoints: ``last.pt`` is written to a local directory after every epoch, and copied to
``train.output_dir/<run id>/`` when that is a remote URI (``s3://``, ``gs://``, ...), and to
the run's MLflow artifacts (``checkpoints/last.pt``). The run's ``adcs.checkpoint_dir`` tag
names where. ``--resume <run id>`` takes the first that holds a checkpoint: the tagged local
directory, the tagged URI, the MLflow artifact; so a run resumes from another working
directory or another node. A run none of them holds fails to resume, with the three places
named, rather than start again at epoch 0.

These are tracking facts, kept here so that the entry point (``run.py``) only decides where
the job runs.
"""

from __future__ import annotations

import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import storage
from ..config import JobConfig, UsageError, dump_yaml, flatten
from ..engine.checkpoint import check_fits, load_checkpoint
from ..engine.plan import selection_epochs, warmup_epochs
from ..methods import get_method
from .artifacts import write_selection
from .mlflow_run import RunTracker
from .plots import log_accuracy_plot, log_coreset

CHECKPOINT_TAG = "adcs.checkpoint_dir"
CHECKPOINT_ARTIFACT = "checkpoints/last.pt"


def local_checkpoint_dir(output_dir: str, run_id: str) -> Path:
    """Where this process writes ``last.pt``: ``output_dir/<run id>`` when that is local, else a
    directory of this machine's temporary space (the URI gets a copy every epoch)."""
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
    """``(run id or None, the run's tagged checkpoint location or None, local checkpoint file
    or None)`` of ``--resume``: a checkpoint file, a checkpoint directory, or an MLflow run id.

    For a run id the checkpoint is found as the module docstring says (a copy from a URI or from
    MLflow lands in this machine's checkpoint directory of the run); None when nowhere holds one.
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
    tagged = run.data.tags.get(CHECKPOINT_TAG)
    if tagged and storage.is_local(tagged) and (storage.local_path(tagged) / "last.pt").is_file():
        return resume, tagged, storage.local_path(tagged) / "last.pt"
    if _reachable_home(tagged) and storage.is_local(tagged):  # this machine holds the run's directory
        here = storage.local_path(tagged)
    else:
        here = local_checkpoint_dir(tagged if tagged and not storage.is_local(tagged) else output_dir, resume)
    if tagged and not storage.is_local(tagged) and storage.exists(storage.join(tagged, "last.pt")):
        return resume, tagged, storage.download(storage.join(tagged, "last.pt"), here / "last.pt")
    try:
        got = tracker.client.download_artifacts(resume, CHECKPOINT_ARTIFACT, str(here))
        return resume, tagged, Path(got)
    except Exception:  # no such artifact (or an artifact store this machine cannot read)
        return resume, tagged, None


def _reachable_home(tagged: str | None) -> bool:
    """The tagged checkpoint location is one this process can keep writing to: a URI, or a
    local directory that exists here (not the directory of another node or working copy)."""
    return bool(tagged) and (not storage.is_local(tagged) or storage.local_path(tagged).is_dir())


def _nowhere(resume: str, tagged: str | None) -> str:
    return (f"--resume {resume}: no checkpoint in the run's directory ({tagged or 'no ' + CHECKPOINT_TAG + ' tag'}) "
            f"nor in its MLflow artifacts ({CHECKPOINT_ARTIFACT}); it cannot continue")


class NothingToResume(UsageError):
    """``--resume`` names a run that recorded no checkpoint (cut off before its first one): it
    cannot continue. Raised for this case only, so that a caller may start the job afresh
    (benchmarks/quality/runner.py) while every other error still surfaces."""


@dataclass
class JobRun:
    """An open job run: its tracker, checkpoint directory and the checkpoint to resume from."""

    cfg: JobConfig
    tracker: RunTracker
    checkpoint_dir: Path  # local: last.pt after every epoch
    resume_checkpoint: Path | None  # a checkpoint file to continue from, when it exists here
    checkpoint_uri: str | None = None  # remote train.output_dir/<run id>: a copy of last.pt every epoch

    @classmethod
    def open(cls, cfg: JobConfig, *, resume: str | None = None, parent_run_id: str | None = None,
             require_local_checkpoint: bool = True) -> "JobRun":
        """Create the run (or reopen the run named by ``resume``).

        Raises:
            FileNotFoundError: ``resume`` names nothing (neither a checkpoint file nor a run).
            NothingToResume: ``resume`` names a run without a recorded checkpoint.
            Both are raised before any run is created or changed.
        """
        tracker = RunTracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
        run_id = tagged = ckpt = None
        output = cfg.train.output_dir
        if resume:
            run_id, tagged, ckpt = _resume_target(tracker, resume, output)
            if require_local_checkpoint and ckpt is None:
                raise NothingToResume(_nowhere(resume, tagged))
            if ckpt is not None:  # a file that is no checkpoint, or another job's, fails before the run opens
                check_fits(load_checkpoint(ckpt), dump_yaml(cfg), f"--resume {resume}")
        if run_id:
            tracker.run_id = run_id
            tracker.resume()
        else:
            tracker.start(run_name(cfg), flatten(cfg), run_tags(cfg), run_description(cfg),
                          parent_run_id=parent_run_id)
        # a run keeps writing where it wrote (its tag), else where this config says
        home = tagged if _reachable_home(tagged) else None
        if home is None:
            home = (storage.join(output, tracker.run_id) if not storage.is_local(output)
                    else str(local_checkpoint_dir(output, tracker.run_id)))
        remote = None if storage.is_local(home) else home
        ckpt_dir = local_checkpoint_dir(remote, tracker.run_id) if remote else storage.local_path(home)
        tracker.set_tags({CHECKPOINT_TAG: home})
        return cls(cfg, tracker, ckpt_dir, ckpt if ckpt is not None and ckpt.is_file() else None, remote)

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def ray_storage(self) -> str:
        """Ray Train's ``storage_path`` for this run: shared by every node when it is a URI."""
        return storage.join(self.checkpoint_uri, "ray") if self.checkpoint_uri else str(self.checkpoint_dir / "ray")

    def log_checkpoint(self, path: Path | None = None) -> None:
        """Copy ``last.pt`` (after an epoch) to the remote checkpoint directory, if any, and to
        the run's MLflow artifacts, so that a resume elsewhere finds it."""
        path = path or self.last_checkpoint
        if self.checkpoint_uri:
            storage.upload(path, storage.join(self.checkpoint_uri, "last.pt"))
        self.tracker.log_artifact(path, "checkpoints")

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
        self.log_checkpoint()
        log_accuracy_plot(self.tracker, selection_epochs=selection_epochs(self.cfg.train.epochs, self.cfg.coreset),
                          warmup_epochs=warmup_epochs(self.cfg.coreset))

    def interrupted_message(self, err: BaseException) -> str:
        how = {signal.SIGINT: "interrupted (SIGINT)", signal.SIGTERM: "terminated (SIGTERM)"}.get(
            getattr(err, "signum", signal.SIGINT), "interrupted")
        return (f"{how}: MLflow run {self.tracker.run_id} is marked KILLED; its checkpoints are kept, "
                f"continue it with the same command and --resume {self.tracker.run_id}")

    def finished_message(self, log: Path | None = None) -> str:
        t = self.tracker
        text = (f"MLflow run {t.run_id} FINISHED in experiment '{self.cfg.mlflow.experiment}' at {t.uri}\n"
                f"  see it with: adcs ui   (or: mlflow ui --backend-store-uri {t.uri} --host 127.0.0.1)")
        if log is not None:
            text += f"\n  Ray's and Train's log: {log} (artifact logs/{log.name})"
        return text
