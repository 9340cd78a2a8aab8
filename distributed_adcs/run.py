"""``adcs train`` in one process: build the job, run its epochs, track it in MLflow.

The distributed pipeline (``distributed_adcs.distributed``) runs the same ``Job`` inside Ray
Train workers; this module is the path with ``ray.num_workers: 0``.
"""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence


from .config import JobConfig, UsageError, dump_yaml, flatten
from .distributed.sched import compute_thread
from .engine.build import load_job_splits
from .engine.checkpoint import load_checkpoint, save_checkpoint
from .engine.job import Job, Selection
from .engine.plan import selection_epochs
from .engine.selection import local_selector, write_selection
from .progress import epoch_line, final_line
from .engine.runtime import resolve_device, seed_everything
from .tracking import RunTracker
from .tracking.plots import log_accuracy_plot, log_coreset

CHECKPOINT_TAG = "adcs.checkpoint_dir"


def run_name(cfg: JobConfig) -> str:
    if cfg.mlflow.run_name:
        return cfg.mlflow.run_name
    c = cfg.coreset
    method = "full" if c.method == "full" else f"{c.method}{c.fraction:g}"
    return f"{cfg.data.name}-{cfg.objective.name}-{method}"


def run_tags(cfg: JobConfig) -> dict[str, str]:
    c = cfg.coreset
    return {"adcs.dataset": cfg.data.name, "adcs.objective": cfg.objective.name, "adcs.model": cfg.model.name,
            "adcs.method": c.method, "adcs.fraction": f"{1.0 if c.method == 'full' else c.fraction:g}"}


def run_description(cfg: JobConfig) -> str:
    c = cfg.coreset
    what = ("full-data adversarial training" if c.method == "full" else
            f"adversarial coreset training ({c.method}, {c.fraction:.0%} of the data, reselected every "
            f"{c.every} epochs after {c.warmup_epochs} warm-up epochs)")
    return (f"{what} of {cfg.model.name} on {cfg.data.name} with {cfg.objective.name} "
            f"(epsilon {cfg.objective.epsilon:g}) for {cfg.train.epochs} epochs")


def _raise_on_sigterm() -> None:
    """Turn SIGTERM into an exception so the run is marked FAILED, not left RUNNING."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. inside a Ray actor): leave it to the host
        pass


def resolve_resume(tracker: RunTracker, resume: str) -> tuple[str | None, Path]:
    """``resume`` is a checkpoint file, a checkpoint directory, or an MLflow run id."""
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if path.is_file():
        return None, path
    try:
        run = tracker.client.get_run(resume)
    except Exception:
        raise FileNotFoundError(f"--resume {resume}: neither a checkpoint file nor a run in {tracker.uri}") from None
    ckpt_dir = run.data.tags.get(CHECKPOINT_TAG)
    if not ckpt_dir:
        raise FileNotFoundError(f"--resume {resume}: the run has no {CHECKPOINT_TAG} tag")
    return resume, Path(ckpt_dir) / "last.pt"


def log_selection(tracker: RunTracker, job: Job, selection: Selection) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_selection(Path(tmp) / f"coreset_epoch{selection.epoch:03d}.parquet", job.splits.train, selection)
        log_coreset(tracker, path, job.splits.num_classes)


def train(cfg: JobConfig, *, resume: str | None = None, parent_run_id: str | None = None,
          on_epoch: Callable[[int, dict], None] | None = None, train_callbacks: Sequence = ()) -> str:
    """Run a whole training job and return its MLflow run id.

    ``ray.num_workers: 0`` trains in this process; otherwise Ray Train runs the job (see
    ``distributed_adcs.distributed``). Either way this process owns the MLflow run.

    Args:
        resume: an MLflow run id or a checkpoint path to continue from.
        parent_run_id: nest this job's run under another (a sweep).
        on_epoch: ``on_epoch(epoch, metrics)`` after every in-process epoch (Tune reporting).
        train_callbacks: extra Ray Train callbacks for the distributed path (Tune reporting).
    """
    _raise_on_sigterm()
    seed_everything(cfg.seed, cfg.deterministic)
    run_id, ckpt = None, None
    try:  # everything that can fail on bad input, before any run (or store) is created
        splits = load_job_splits(cfg)
        tracker = RunTracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
        if resume:
            run_id, ckpt = resolve_resume(tracker, resume)
            if not ckpt.is_file() and cfg.ray.num_workers == 0:
                raise FileNotFoundError(f"--resume {resume}: no checkpoint at {ckpt}")
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    if run_id:
        tracker.run_id = run_id
        tracker.resume()
    else:
        tracker.start(run_name(cfg), flatten(cfg), run_tags(cfg), run_description(cfg), parent_run_id=parent_run_id)
    ckpt_dir = (Path(cfg.train.output_dir) / tracker.run_id).resolve()
    tracker.set_tags({CHECKPOINT_TAG: str(ckpt_dir)})
    with tracker:
        tracker.log_text(dump_yaml(cfg), "config.yaml")
        if cfg.ray.num_workers > 0:
            from .distributed.driver import run_trainer

            last = run_trainer(cfg, splits, tracker, ckpt_dir / "ray", callbacks=train_callbacks,
                               resume_path=str(ckpt) if ckpt is not None and ckpt.is_file() else None)
            if last is not None:
                save_checkpoint(ckpt_dir / "last.pt", load_checkpoint(last))
        else:
            _train_here(cfg, splits, tracker, ckpt_dir, ckpt, on_epoch)
        tracker.log_artifact(ckpt_dir / "last.pt", "checkpoints")
        log_accuracy_plot(tracker, selection_epochs=selection_epochs(cfg.train.epochs, cfg.coreset),
                          warmup_epochs=cfg.coreset.warmup_epochs if cfg.coreset.method != "full" else 0)
    _print(f"MLflow run {tracker.run_id} FINISHED in experiment '{cfg.mlflow.experiment}' at {tracker.uri}\n"
           f"  see it with: adcs ui   (or: mlflow ui --backend-store-uri {tracker.uri} --host 127.0.0.1)")
    return tracker.run_id


def _train_here(cfg: JobConfig, splits, tracker: RunTracker, ckpt_dir: Path, resume_ckpt: Path | None,
                on_epoch: Callable[[int, dict], None] | None) -> None:
    compute_thread()  # a Tune trial's thread inherits Ray's SCHED_BATCH: train at normal policy
    device = resolve_device(cfg.train.device)
    job = Job(cfg, splits, device)
    cleanup: list = []
    if cfg.coreset.method != "full":
        job.selector = _selector(cfg, splits, device, cleanup)
    try:
        if resume_ckpt is not None:
            job.restore(load_checkpoint(resume_ckpt, map_location=device))
        _run_epochs(cfg, job, tracker, ckpt_dir, on_epoch)
    finally:
        for release in cleanup:
            release()
    final = job.final_evaluation()
    tracker.log_metrics(final, step=cfg.train.epochs)
    _print(final_line(final))


def _selector(cfg: JobConfig, splits, device, cleanup: list):
    """In-process selection, or Ray embedding actors when ``ray.num_actors > 0``.

    Releases (actors, a Ray started here) are appended to ``cleanup``.
    """
    if cfg.ray.num_actors == 0:
        return local_selector(cfg, splits, device)
    import ray

    from .distributed.actors import ActorPoolSelector, start_actors
    from .distributed.cluster import connect

    if connect(cfg.ray):
        cleanup.append(ray.shutdown)
    actors = start_actors(cfg, splits)
    cleanup.insert(0, actors.kill)
    return ActorPoolSelector(cfg, actors, splits.train, splits.num_classes)


def _run_epochs(cfg: JobConfig, job: Job, tracker: RunTracker, ckpt_dir: Path,
                on_epoch: Callable[[int, dict], None] | None = None) -> None:
    for epoch in range(job.state.epoch, cfg.train.epochs):
        metrics, selection = job.run_epoch(epoch)
        metrics.update(job.validate(epoch))
        tracker.log_metrics(metrics, step=epoch)
        if selection is not None:
            log_selection(tracker, job, selection)
        save_checkpoint(ckpt_dir / "last.pt", job.payload())
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        _print(epoch_line(epoch, cfg.train.epochs, metrics))


def _print(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
