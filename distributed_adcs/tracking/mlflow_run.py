"""One MLflow run per job, driven through ``MlflowClient`` with explicit run ids.

Explicit ids (not MLflow's process-global "active run") let the same code log from a CLI
process, a Ray Train worker or a Tune trial without stepping on another run.

Default store: ``sqlite:///<cwd>/mlflow.db`` with artifacts in ``<cwd>/mlartifacts``, both
absolute so that processes that change directory (Ray workers, Tune trials) find them.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ..config.schema import OUTAGE_S
from .outbox import Outbox, ServerUnreachable
from .stores import resolve_tracking_uri

_MAX_PARAM = 6000  # MLflow's parameter value limit (characters)
# MLflow's limits on one log_batch (mlflow.utils.validation): 1,000 metrics, 100 params or tags
_BATCH_METRICS, _BATCH_PARAMS = 1000, 100

# First use of a sqlite store logs its schema migrations at INFO on stderr; keep the CLI's
# stderr for our own messages.
for _name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def _artifact_root(uri: str, experiment: str) -> str | None:
    """``<dir of mlflow.db>/mlartifacts/<experiment>`` for a local sqlite store; a server decides otherwise."""
    if uri.startswith("sqlite:///"):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in experiment)
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / safe).resolve().as_uri()
    return None


@contextmanager
def store_lock(uri: str):
    """Held while a process first opens a sqlite store. MLflow creates (and migrates) the schema
    of a sqlite file on first use, without a lock of its own: four jobs started at once on a
    new ``mlflow.db`` failed with ``duplicate column name: step``. Other stores: no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(uri[len("sqlite:///"):])
    with FileLock(str(db) + ".lock", timeout=300):
        yield


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_root(uri, name))
    except Exception:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


class RunTracker:
    """Owns one MLflow run: params, per-epoch metrics, artifacts and the terminal status.

    Use as a context manager: an exception marks the run FAILED (KeyboardInterrupt: KILLED)
    and propagates; a clean exit marks it FINISHED, once every record is delivered.

    On a tracking server (an http(s) URI) the run's writes go through an :class:`Outbox`: what
    the server does not take while it restarts waits, in order, and is delivered when it is
    back, for up to ``outage_s`` (``mlflow.outage_s``; ``tracking/outbox.py``).
    """

    def __init__(self, tracking_uri: str | None, experiment: str | None, *, run_id: str | None = None,
                 experiment_id: str | None = None, outage_s: float = OUTAGE_S):
        """``experiment``: the one new runs go to (created if missing). With ``run_id`` (an
        existing run) and no ``experiment``, the run's own, and nothing is created;
        ``experiment_id``, when the caller knows it, spares the look-up (a Ray Train
        controller opens the run while the server may be down).

        Raises:
            LookupError: ``run_id`` is not a run of this store.
        """
        self.uri = resolve_tracking_uri(tracking_uri)
        self.outage_s = outage_s
        self.outbox = Outbox(self.uri, outage_s) if self.uri.startswith(("http://", "https://")) else None
        with store_lock(self.uri):  # the first use of a new sqlite store creates its schema
            self.client = MlflowClient(self.uri)
            self.run_id: str | None = run_id
            if experiment_id is not None and run_id is not None:
                self.experiment_id = experiment_id
            else:
                self._open(experiment, run_id)

    def _open(self, experiment: str | None, run_id: str | None) -> None:
        if experiment is None:
            if run_id is None:
                raise ValueError("RunTracker needs an experiment or an existing run")
            try:
                self.experiment_id = self.client.get_run(run_id).info.experiment_id
            except Exception as err:
                raise LookupError(f"run {run_id} not found in {self.uri} ({type(err).__name__})") from None
        else:
            self.experiment_id = ensure_experiment(self.client, experiment, self.uri)
        self.run_id = run_id

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str] | None = None,
              description: str | None = None, parent_run_id: str | None = None) -> str:
        tags = dict(tags or {})
        if description:
            tags["mlflow.note.content"] = description
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()]
        for i in range(0, len(items), _BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=items[i:i + _BATCH_PARAMS])
        return self.run_id

    @property
    def open_run_id(self) -> str:
        """The open run's id: logging before :meth:`start` (with no existing run) is a bug."""
        if self.run_id is None:
            raise RuntimeError("RunTracker has no run: call start() first or open an existing run_id")
        return self.run_id

    def resume(self) -> None:
        """Reopen an existing run (``--resume``): mark it RUNNING again."""
        self.client.update_run(self.open_run_id, status="RUNNING")

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        """One step's metrics; ``None`` (not measured) logs nothing.

        NaN and +-inf are logged, so a diverging run shows NaN where it diverged, not a gap.
        MLflow 3.17 returns NaN as NaN and +-inf as +-1.7976931348623157e308 (the largest
        float: SQL has no infinity), from a sqlite store and through a tracking server alike
        (tests/test_run_tracker.py, tests/test_tracking_server.py).
        """
        self.log_history({k: [(step, v)] for k, v in metrics.items() if v is not None})

    def log_history(self, history: Mapping[str, Iterable[tuple[int, float]]]) -> None:
        """Metrics of many steps, ``{key: [(step, value), ...]}``, in as few batches as MLflow takes."""
        now = int(time.time() * 1000)  # (a row sent again carries the same time: MLflow keeps one)
        rows = [Metric(k, float(v), now, step) for k, points in history.items() for step, v in points]
        run_id = self.open_run_id
        for i in range(0, len(rows), _BATCH_METRICS):
            batch = rows[i:i + _BATCH_METRICS]
            steps = sorted({m.step for m in batch})
            self._write(f"metrics of step {steps[0]}" + (f" to {steps[-1]}" if len(steps) > 1 else ""),
                        lambda _, batch=batch: self.client.log_batch(run_id, metrics=batch))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        run_id, rows = self.open_run_id, [RunTag(k, str(v)) for k, v in tags.items()]
        self._write(f"tags {', '.join(tags)}", lambda _: self.client.log_batch(run_id, tags=rows))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        run_id, name = self.open_run_id, Path(path).name
        self._write(f"artifact {artifact_path}/{name}" if artifact_path else f"artifact {name}",
                    lambda f: self.client.log_artifact(run_id, str(f), artifact_path), Path(path))

    def _write(self, what: str, send, file: Path | None = None) -> None:
        """``send(file)`` now, or through the outbox on a tracking server."""
        if self.outbox is None:
            send(file)
        else:
            self.outbox.send(what, send, file)

    def flush(self) -> None:
        """Wait until the server holds every record written so far (before reading them back).

        Raises:
            ServerUnreachable: the server took nothing for ``outage_s``.
        """
        if self.outbox is not None:
            self.outbox.flush()

    def log_text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(name).name
            target.write_text(text)
            parent = str(Path(name).parent)
            self.log_artifact(target, None if parent == "." else parent)

    def log_json(self, obj: Any, name: str) -> None:
        self.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), name)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run ``status`` once every record before it is delivered."""
        run_id = self.open_run_id
        self._write(f"status {status}", lambda _: self.client.set_terminated(run_id, status=status))
        self.flush()

    def __enter__(self) -> "RunTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if self.run_id is not None:
            if exc_type is None:
                self.finish("FINISHED")
            elif not issubclass(exc_type, ServerUnreachable):  # (a server gone that long is not waited for again)
                try:
                    self.finish("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
                except ServerUnreachable:  # the job's own error is the one to report
                    pass
        return False
