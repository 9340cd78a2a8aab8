"""Recording a job's epochs in its MLflow run, in one order, on both execution paths.

Every epoch is recorded in this order, here and nowhere else (:meth:`EpochRecorder.record`):

1. its coreset, when the epoch selected one: ``coresets/coreset_epochNNN.parquet`` and its
   class histogram;
2. its checkpoint: one copy, written once to durable storage, and named by the run's
   ``adcs.checkpoint`` tag. A copy on a URI (``train.output_dir: s3://...``) is durable by
   itself and MLflow only names it; a file of this machine (a local ``train.output_dir``) gets
   one copy in the run's MLflow artifacts, ``checkpoints/last.pt``, which is what outlives the
   machine. The checkpoint carries the epoch's metrics;
3. its metrics, at ``step = epoch``;

then the job's epoch hooks and the epoch's console line.

Why this order: an epoch whose metrics are recorded has its coreset and its checkpoint recorded
(they come first), and a resume reads only a recorded checkpoint, so it continues after an
epoch whose coreset is recorded. An epoch whose checkpoint is not recorded is trained again on
resume, with the same seeds: its coreset is written again under the same name with the same
rows, and its metrics are recorded then, once. The one window left, a job that dies between 2
and 3, is closed by the checkpoint: a resume records the metrics it carries when the run lacks
them (:func:`record_missing_metrics`). So a crash anywhere leaves each epoch's metrics
recorded once.

The in-process job records through :class:`ProcessSink`; a Ray Train job's controller through
``distributed.reporter.MlflowReporter``, with the same :class:`EpochRecorder`.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from .. import storage
from ..config.schema import OUTAGE_S
from ..console import say
from ..progress import epoch_line, final_line

CHECKPOINT_FILE = "last.pt"  # a checkpoint's name in a run's directory and in a Ray Train checkpoint
CHECKPOINT_TAG = "adcs.checkpoint"  # where the run's last recorded checkpoint is (a path or a URI)
CHECKPOINT_ARTIFACT = "checkpoints/last.pt"  # its MLflow copy, when that place is a file of one machine
# each test example's outcome under each attack of the final evaluation (Job.test_outcomes):
# what a paired comparison of two runs on the same test images needs
OUTCOMES_DIR = "eval"  # every outcomes artifact of a run: the training job's and each `adcs evaluate`'s
OUTCOMES_ARTIFACT = f"{OUTCOMES_DIR}/test_outcomes.json"
# tests: "EPOCH:STEP:MARKER" SIGKILLs the recording process right after STEP (coreset, checkpoint
# or metrics) of EPOCH, once (while the file MARKER does not exist): a crash between two steps
KILL_ENV = "ADCS_FAULT_KILL_AFTER"


class EpochHook(Protocol):
    """``train(callbacks=...)``: called after each epoch's metrics are recorded (or, while a tracking
    server restarts, wait in the run's outbox to be), in the process that records them (a Ray
    Train job's controller: such a hook must pickle). A hook whose ``takes_checkpoint`` is true is
    also handed ``checkpoint=``: where the epoch's checkpoint is recorded (a file here, or a URI)."""

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


class EpochRecorder:
    """Records a job's epochs and its final evaluation in its run (the module docstring's order).

    Picklable: a Ray Train controller gets a copy, which opens its own client on first use.
    """

    def __init__(self, tracking_uri: str, run_id: str, num_classes: int, epochs: int,
                 hooks: Sequence[EpochHook] = (), *, tracker=None):
        self.tracking_uri, self.run_id, self.num_classes, self.epochs = tracking_uri, run_id, num_classes, epochs
        self.hooks = list(hooks)
        self.fault = os.environ.get(KILL_ENV)  # read where the job starts: a controller has another environment
        self._tracker = tracker
        # what a copy opens its own tracker with: the run's experiment (no look-up while the
        # server may be down) and how long it rides out an outage (mlflow.outage_s)
        self.experiment_id = tracker.experiment_id if tracker is not None else None
        self.outage_s = tracker.outage_s if tracker is not None else OUTAGE_S
        self._named: str | None = None  # the checkpoint the tag names now (set once per place)
        self.final_recorded = False  # the test evaluation is recorded once (see final)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tracker": None}

    @property
    def tracker(self):
        if self._tracker is None:  # MLflow loads on first use, not when a controller unpickles this
            from .mlflow_run import RunTracker

            self._tracker = RunTracker(self.tracking_uri, None, run_id=self.run_id, experiment_id=self.experiment_id,
                                       outage_s=self.outage_s)
        return self._tracker

    def record(self, epoch: int, metrics: dict[str, float], *, coreset: Path | None,
               checkpoint: Callable[[], str]) -> None:
        """Record epoch ``epoch``: ``coreset`` (a Parquet file or None), then the checkpoint that
        ``checkpoint()`` puts in its place and returns (a local path or a URI), then ``metrics``."""
        if coreset is not None:
            from .plots import log_coreset

            log_coreset(self.tracker, coreset, self.num_classes)
        self._fault(epoch, "coreset")
        where = checkpoint()
        if storage.is_local(where):  # a file of this machine: MLflow's copy is the one that outlives it
            self.tracker.log_artifact(storage.local_path(where), Path(CHECKPOINT_ARTIFACT).parent.as_posix())
        if where != self._named:
            self.tracker.set_tags({CHECKPOINT_TAG: where})
            self._named = where
        self._fault(epoch, "checkpoint")
        self.tracker.log_metrics(metrics, step=epoch)
        self._fault(epoch, "metrics")
        for hook in self.hooks:
            hook.on_epoch(epoch, metrics, **({"checkpoint": where} if getattr(hook, "takes_checkpoint", False) else {}))
        say(epoch_line(epoch, self.epochs, metrics), epoch=True)

    def final(self, metrics: dict[str, float], outcomes: dict | None = None) -> None:
        """The test evaluation, at ``step = epochs``, and each test example's outcome under each
        attack (``Job.test_outcomes``) as the artifact :data:`OUTCOMES_ARTIFACT`; then every record
        of the job is delivered (a Ray Train controller ends after this: what waits in its outbox,
        for a tracking server that is restarting, is sent first, or the job fails naming the server).

        Once: a Ray Train controller may be handed the evaluation again. Seen in a clean clone's
        suite: after the final report, Train removed the worker group's placement group under the
        live worker, took the failed health check for a worker failure, and restarted the group
        from the last checkpoint, which has no epoch left, so it evaluated again. The values were
        the same (the same model, seeded); a second record would be the same step twice."""
        if self.final_recorded:
            return
        if outcomes:
            self.tracker.log_json(outcomes, OUTCOMES_ARTIFACT)
        self.tracker.log_metrics(metrics, step=self.epochs)
        self.tracker.flush()
        self.final_recorded = True
        say(final_line(metrics))

    def _fault(self, epoch: int, step: str) -> None:
        if not self.fault:
            return
        at, where, marker = self.fault.split(":", 2)
        if int(at) == epoch and where == step and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


class ProcessSink:
    """``engine.loop.run_epochs``' sink for a job that trains in this process.

    The checkpoint goes to ``local`` (``last.pt`` in the run's directory of this machine) and,
    when the run's directory is a URI (``remote``), is uploaded there: that object is its one
    durable copy, and the local file only the staging of its upload.
    """

    def __init__(self, recorder: EpochRecorder, train, local: Path, remote: str | None):
        self.recorder, self.train, self.local, self.remote = recorder, train, local, remote

    def epoch(self, epoch, metrics, selection, payload) -> None:
        # (imported here: a Ray Train controller imports this module, and should not load torch for it)
        from ..engine.checkpoint import save_checkpoint
        from ..coreset.table import write_selection

        def place() -> str:
            save_checkpoint(self.local, payload)
            if self.remote is None:
                return str(self.local)
            target = storage.join(self.remote, self.local.name)
            storage.upload(self.local, target)
            return target

        with tempfile.TemporaryDirectory() as tmp:
            coreset = (None if selection is None else
                       write_selection(Path(tmp) / coreset_name(epoch), self.train, selection))
            self.recorder.record(epoch, metrics, coreset=coreset, checkpoint=place)


def coreset_name(epoch: int) -> str:
    """The coreset file of the selection at ``epoch``, as both paths name it."""
    return f"coreset_epoch{epoch:03d}.parquet"


def find_checkpoint(client, run_id: str, here: Path) -> Path | None:
    """The run's last recorded checkpoint as a file of this machine, or None when there is none.

    The file its ``adcs.checkpoint`` tag names, when this machine reads it (a file here, or a
    URI, downloaded into ``here``); else the run's MLflow copy (``checkpoints/last.pt``, into
    ``here``), which exists whenever the tagged place is a file of one machine; else ``last.pt``
    in ``here`` itself (the run's directory on this machine), which a job that failed while its
    tracking server was down left unrecorded.
    """
    tagged = client.get_run(run_id).data.tags.get(CHECKPOINT_TAG)
    if tagged and storage.is_local(tagged) and storage.local_path(tagged).is_file():
        return storage.local_path(tagged)
    if tagged and not storage.is_local(tagged) and storage.exists(tagged):
        return storage.download(tagged, here / Path(tagged).name)
    try:
        return Path(client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, str(here)))
    except Exception:  # no such artifact (or an artifact store this machine cannot read)
        pass
    # the job's own copy in the run's directory here: its record never reached the tracking
    # server (the job failed while the server was down), which must not block the resume
    own = here / CHECKPOINT_FILE
    return own if own.is_file() else None


def record_missing_metrics(tracker, payload: dict[str, Any]) -> bool:
    """Record the metrics a checkpoint carries for its last epoch if the run lacks them (the job
    died between recording the checkpoint and the metrics); return whether it did. MLflow writes
    an epoch's metrics in one batch, so one of them tells whether all are there."""
    metrics, step = payload.get("metrics") or {}, int(payload["epoch"]) - 1
    if not metrics or step < 0:
        return False
    key = next((k for k, v in metrics.items() if v is not None), None)
    if key is None or any(m.step == step for m in tracker.client.get_metric_history(tracker.run_id, key)):
        return False
    tracker.log_metrics(metrics, step=step)
    return True
