"""A run's writes to an MLflow tracking server, kept and delivered in order across its restarts.

A tracking server on a cluster restarts (an upgrade, a pod moved, a database failover). A job
must neither die of that nor lose a record. Every write of a run that records to a server
(metrics, tags, artifacts, its final status) goes through the run's :class:`Outbox`:

- while the server answers, a write is sent at once, in the caller, as before;
- when one fails in a way that passes (no connection, a timeout, a 5xx or 429 answer), it and
  every later write wait in the outbox, in order, and a background thread sends the oldest
  again with exponential backoff (1 s, doubling up to 30 s) until the server takes it. The
  job trains on meanwhile: a dead server costs the training loop one refused connection;
- a write that waits and sends a file (an artifact) sends a snapshot of that file taken when
  it was written (a hard link, else a copy): the job replaces ``last.pt`` every epoch and Ray
  Train deletes old checkpoint directories, and what arrives must be what was meant;
- when nothing could be delivered for ``patience_s`` (``mlflow.outage_s``, 5 minutes by
  default), the next write, or :meth:`Outbox.flush` at the end of the job (which waits up
  to that long), raises :class:`ServerUnreachable`: one line naming the server;
- a write that the server refuses (a 4xx answer: bad input) raises at once, as before.

Resending is safe: a metric row carries the time it was logged, and MLflow drops a row that
is already stored with the same key, step, time and value; tags and artifacts overwrite.

Why not MLflow's own retries: its client retries every request itself, in the caller
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES=7``, backoff factor 2: about 4 minutes on a refused
connection), then raises and the write is gone. A job then stalled minutes at an epoch and
died, or (a Ray Train controller) went on without that epoch's metrics. Outbox's attempts run
with MLflow's retries off (one request each), so the backoff and the deadline are ours alone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..console import say

FIRST_WAIT_S, MAX_WAIT_S = 1.0, 30.0  # backoff between tries of the oldest waiting write
_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"  # read by MLflow at each request


class ServerUnreachable(RuntimeError):
    """The tracking server took nothing for ``mlflow.outage_s``: the run cannot be recorded."""


def transient(err: BaseException) -> bool:
    """Whether ``err`` of a write may pass if the write is sent again later: no connection or
    a timeout (MLflow wraps both in an ``MlflowException`` with HTTP status 500), or a 5xx or
    429 answer. A 4xx answer is the write's own fault."""
    status = getattr(getattr(err, "response", None), "status_code", None)  # requests.HTTPError (artifacts)
    if status is None and hasattr(err, "get_http_status_code"):  # MlflowException, RestException
        status = err.get_http_status_code()
    if status is not None:
        return status >= 500 or status == 429
    return isinstance(err, OSError)  # requests' ConnectionError and Timeout are OSErrors


@contextmanager
def _one_request() -> Iterator[None]:
    """MLflow's retries off around one write (what the user set is put back after)."""
    before = os.environ.get(_RETRIES_ENV)
    os.environ[_RETRIES_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_RETRIES_ENV, None)
        else:
            os.environ[_RETRIES_ENV] = before


@dataclass
class _Write:
    what: str  # for messages: "metrics at step 3", "artifact checkpoints/last.pt"
    send: Callable[[Path | None], None]
    file: Path | None  # what ``send`` reads (a snapshot once the write waits)
    owned: bool = False  # the file is our snapshot: deleted once delivered


class Outbox:
    """The writes of one run to ``server``, in order (the module docstring)."""

    def __init__(self, server: str, patience_s: float):
        self.server, self.patience_s = server, patience_s
        self._waiting: deque[_Write] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None  # first failure since the last delivery (monotonic)
        self._reason = ""
        self._failure: BaseException | None = None  # why the outbox gave up (raised to the caller)
        self._spool: Path | None = None
        self._spooled = 0

    def send(self, what: str, send: Callable[[Path | None], None], file: Path | None = None) -> None:
        """Write ``send(file)`` now, or after every write that waits, or raise what stopped the outbox."""
        with self._cond:
            self._check()
            if not self._waiting:
                try:
                    with _one_request():
                        send(file)
                    return
                except Exception as err:
                    if not transient(err) or self.patience_s <= 0:
                        raise
                    self._went_down(err)
            write = _Write(what, send, file)
            if file is not None:
                write.file, write.owned = self._snapshot(file), True
            self._waiting.append(write)
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver, name="adcs-mlflow-outbox", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Wait until every write is delivered (at most until the outbox gives up), or raise why not."""
        with self._cond:
            while self._waiting and self._failure is None:
                self._expire()
                self._cond.wait(0.5)
            self._check()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _check(self) -> None:
        self._expire()
        if self._failure is not None:
            raise self._failure

    def _expire(self) -> None:
        if (self._failure is None and self._waiting and self._down_since is not None
                and time.monotonic() - self._down_since >= self.patience_s):
            self._failure = ServerUnreachable(
                f"MLflow tracking server {self.server} did not answer for {self.patience_s:g} s "
                f"(mlflow.outage_s): {len(self._waiting)} records of the run not delivered, the oldest "
                f"{self._waiting[0].what} ({self._reason})")

    def _went_down(self, err: BaseException) -> None:
        self._reason = _one_line(err)
        if self._down_since is None:
            self._down_since = time.monotonic()
            say(f"warning: MLflow tracking server {self.server} does not answer ({self._reason}); "
                f"the run's records wait and are sent again for up to {self.patience_s:g} s (mlflow.outage_s)",
                err=True)

    def _deliver(self) -> None:
        """The background thread: send the oldest waiting write until none waits or the outbox gives up."""
        wait, delivered, started = FIRST_WAIT_S, 0, time.monotonic()
        while True:
            with self._cond:
                self._expire()
                if not self._waiting or self._failure is not None:
                    self._thread = None
                    self._cond.notify_all()
                    return
                head = self._waiting[0]
            try:
                with _one_request():
                    head.send(head.file)
            except Exception as err:
                with self._cond:
                    if transient(err):
                        self._went_down(err)
                        self._expire()
                        left = self.patience_s - (time.monotonic() - (self._down_since or 0.0))
                        self._cond.wait(max(0.0, min(wait, left)))
                        wait = min(2 * wait, MAX_WAIT_S)
                    else:  # refused by a server that answers: the caller learns why at its next write
                        self._failure = err
                continue
            with self._cond:
                self._waiting.popleft()
                if head.owned and head.file is not None:
                    head.file.unlink(missing_ok=True)
                delivered += 1
                self._down_since, wait = None, FIRST_WAIT_S
                if not self._waiting:
                    say(f"MLflow tracking server {self.server} answers again: {delivered} waiting records "
                        f"delivered in order, {time.monotonic() - started:.0f} s after the first failed", err=True)
                    self._remove_spool()

    def _snapshot(self, file: Path) -> Path:
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="adcs-outbox-"))
        self._spooled += 1
        target = self._spool / f"{self._spooled:06d}" / file.name  # keeps the artifact's name
        target.parent.mkdir()
        try:
            os.link(file, target)  # the job replaces its files by rename: a link keeps this version
        except OSError:
            shutil.copyfile(file, target)
        return target

    def _remove_spool(self) -> None:
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None


def _one_line(err: BaseException) -> str:
    """Why a write failed, short: the socket's error when there is one (MLflow's message puts it
    last, after the whole URL and urllib3's pool description)."""
    text = str(err).strip()
    cause = re.search(r"\[Errno -?\d+\] [^'\"()]+|Read timed out|Connection aborted|\b[45]\d\d [A-Z][A-Za-z ]+", text)
    if cause:
        return cause.group(0).strip()
    lines = text.splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]
