"""The in-process job: every epoch in this process, recorded through a ``Recorder``.

Ray Train workers run the same ``Job`` with their own loop (``distributed/trainer.py``); this
one is for ``ray.num_workers: 0``. The recorder is the tracking layer's object (an MLflow run),
passed in so that the engine never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from ..console import say
from ..progress import epoch_line, final_line
from .checkpoint import load_checkpoint, save_checkpoint
from .job import Job, Selection


class Recorder(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_selection(self, train, num_classes: int, selection: Selection) -> None: ...
    def log_checkpoint(self, path: Path) -> None: ...  # a copy that outlives this machine


def run_epochs(job: Job, recorder: Recorder, checkpoint: Path, *, resume_from: Path | None = None,
               on_epoch: Callable[[int, dict], None] | None = None) -> None:
    """Train the remaining epochs (after ``resume_from``), checkpointing to ``checkpoint`` after each."""
    cfg = job.cfg
    if resume_from is not None:
        job.restore(load_checkpoint(resume_from))  # on the CPU: restore() moves what it loads
    for epoch in range(job.state.epoch, cfg.train.epochs):
        metrics, selection = job.run_epoch(epoch)
        metrics.update(job.validate_if_due(epoch))
        # the coreset before the metrics, the checkpoint last: an epoch whose metrics are recorded
        # has its coreset recorded, and one that is not checkpointed is run again on resume
        if selection is not None:
            recorder.log_selection(job.splits.train, job.splits.num_classes, selection)
        recorder.log_metrics(metrics, step=epoch)
        save_checkpoint(checkpoint, job.payload())
        recorder.log_checkpoint(checkpoint)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        say(epoch_line(epoch, cfg.train.epochs, metrics), epoch=True)


def final_evaluation(job: Job, recorder: Recorder) -> dict[str, float]:
    """The test evaluation, recorded at ``step = train.epochs``."""
    final = job.final_evaluation()
    recorder.log_metrics(final, step=job.cfg.train.epochs)
    say(final_line(final))
    return final
