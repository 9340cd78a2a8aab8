"""The epoch driver of every job: :func:`run_epochs`, in this process or on each Ray Train worker.

What differs between the two is only where an epoch's results go, the ``sink``:

- in-process (``ray.num_workers: 0``): ``tracking.epochs.ProcessSink`` records them in the
  job's MLflow run;
- on a Ray Train worker: ``distributed.worker_sink.ReportSink`` reports them to Ray Train,
  whose controller records them in the run (``distributed.reporter.MlflowReporter``).

Both end in ``tracking.epochs.EpochRecorder.record``, which records an epoch in one order:
its coreset, then its checkpoint (which carries the epoch's metrics), then its metrics. That
module says why; ``docs/checkpoints.md`` says what a crash between two steps leaves. The
sinks are the tracking and distributed layers' objects, passed in so that the engine imports
neither.
"""

from __future__ import annotations

from typing import Any, Protocol

from .job import Job, Selection


class EpochSink(Protocol):
    def epoch(self, epoch: int, metrics: dict[str, float], selection: Selection | None,
              payload: dict[str, Any] | None) -> None:
        """Persist one trained epoch: its metrics, the coreset it selected (or None) and its
        checkpoint ``payload`` (``Job.payload``). On DDP ranks other than 0 the metrics are empty
        and there is no payload: those ranks record nothing, they only keep pace."""


def run_epochs(job: Job, sink: EpochSink, *, first_metrics: dict[str, float] | None = None) -> None:
    """Train the job's remaining epochs (from ``job.state.epoch``: restore a checkpoint first to
    resume) and hand each to ``sink``. Rank 0 validates when due; ``first_metrics`` are added to
    the first epoch's metrics (a Ray Train job's start-up times)."""
    extra = dict(first_metrics or {})
    guard = job.guard  # the catastrophic-overfitting guard (guard.enabled) or None: engine/guard.py
    if guard is not None:
        guard.start(job)
    while job.state.epoch < job.cfg.train.epochs and not (guard is not None and guard.stopped):
        epoch = job.state.epoch
        metrics, selection = job.run_epoch(epoch)
        verdict = "keep" if guard is None else guard.after_epoch(job, epoch, metrics)
        if verdict == "retrain":  # collapsed: the state before it is back, and the fallback objective
            continue
        if verdict == "stop":  # recorded with the model before it; its coreset was discarded
            selection = None
        if job.backend.rank != 0:  # rank 0 holds the validation data and records the epoch
            sink.epoch(epoch, {}, None, None)
            continue
        metrics.update(job.validate_if_due(epoch))
        metrics.update(extra)
        extra = {}
        sink.epoch(epoch, metrics, selection, job.payload(metrics))
