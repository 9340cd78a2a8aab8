"""What reaches the person at the terminal, and where everything else goes.

``adcs train`` prints a header, one line per epoch, the final metrics and how to see the run
(:func:`say`). Everything else a job writes (Ray's and Ray Train's logs, the C++ core
workers' lines, library warnings, the lines Ray forwards from its workers and actors) goes to
the run's log file (:func:`capture`), which the run logs to MLflow as ``logs/adcs.log``.
``adcs train --verbose`` captures nothing: the console shows all of it, as before.

How our lines get out of Ray processes: :func:`say` in a Ray worker, actor or the Train
controller prints ``[adcs N] <text>`` (``[adcs:epoch N]`` for an epoch line; N counts that
process's lines) to its stdout, which Ray forwards to the driver on every node; the driver,
capturing, copies the marked lines to the console (:func:`show_forwarded`) and every line, marked
or not, to the log. Ray may forward a line more than once: every node's log monitor reads every
worker log file in its session's directory, and nodes started on one machine share that
directory (a head and a worker node: each line came twice under ``ray job submit``). The
console shows each (node, process, N) once.

Capture works on file descriptors 1 and 2, not only ``sys.stdout``: Ray's C++ code and the
processes it starts write there directly.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

_MARKED = re.compile(r"\[adcs(:epoch)? (\d+)\] (.*)$")  # say() in a Ray process: [adcs N] or [adcs:epoch N]
_EPOCH = re.compile(r"^epoch (\d+)/(\d+) ")
_SEQ = itertools.count(1)  # this process's marked lines


class _State:
    out: IO[str] | None = None  # the console's stdout and stderr while capturing; None: not capturing
    err: IO[str] | None = None
    log_path: Path | None = None
    bar: Any = None  # the one progress bar (tqdm, untyped), on a terminal only
    bar_follows_epochs = False  # epoch lines move it (a job's bar; a sweep's counts trials)
    lock = threading.Lock()  # Ray's log thread and the main thread both write
    shown: set[tuple] = set()  # (node, process, N, text) of every forwarded line shown


_state = _State()


def capturing() -> bool:
    return _state.out is not None


def stream(err: bool = True) -> IO[str]:
    """The console's stderr (or stdout): where progress bars and our lines go."""
    if capturing():
        return _state.err if err else _state.out  # type: ignore[return-value]
    return sys.stderr if err else sys.stdout


def log_path() -> Path | None:
    """The log file of the current capture (None when not capturing)."""
    return _state.log_path


def _in_ray_process() -> bool:
    """True in a Ray worker, actor or Train controller (not the driver)."""
    worker = sys.modules.get("ray._private.worker")
    return worker is not None and getattr(worker.global_worker, "mode", None) == worker.WORKER_MODE


def say(text: str, *, err: bool = False, epoch: bool = False) -> None:
    """Show one line to the user: the only way anything of ours reaches the console.

    ``epoch``: the line ends an epoch (it advances the job's progress bar)."""
    if _in_ray_process():
        print(f"[adcs{':epoch' if epoch else ''} {next(_SEQ)}] {text}", file=sys.stderr if err else sys.stdout,
              flush=True)
        return
    _show(text, err=err, epoch=epoch)
    if capturing():  # the log keeps the whole story
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _show(text: str, *, err: bool, epoch: bool) -> None:
    with _state.lock:
        bar, target = _state.bar, stream(err)
        if bar is not None:
            bar.clear()
        print(text, file=target, flush=True)
        if bar is not None:
            if epoch and _state.bar_follows_epochs and (m := _EPOCH.match(text)):
                bar.n = int(m.group(1))
            bar.refresh()


@contextmanager
def epoch_bar(epochs: int, desc: str = "training") -> Iterator[None]:
    """A bar over the job's epochs on the console's stderr while the job runs (terminals only)."""
    opened = open_bar(epochs, desc, "epoch", follows_epochs=True)
    try:
        yield
    finally:
        if opened:
            close_bar()


def open_bar(total: int, desc: str, unit: str, *, initial: int = 0, follows_epochs: bool = False) -> bool:
    """Open the console's one progress bar (k/total, rate and time left; terminals only), at
    ``initial`` done before it opened (left out of the rate). False, and nothing opened, when
    bars are off or one is open already."""
    from .progress import enabled

    if not enabled() or _state.bar is not None:
        return False
    from tqdm.auto import tqdm

    _state.bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, file=stream(), dynamic_ncols=True,
                      leave=False, disable=False)  # enabled() decided, TQDM_DISABLE included
    _state.bar_follows_epochs = follows_epochs
    return True


def set_bar(done: int, total: int | None = None) -> None:
    """Move the open bar (if any) to ``done`` of ``total``."""
    with _state.lock:
        if _state.bar is not None:
            if total is not None:
                _state.bar.total = total
            _state.bar.n = done
            _state.bar.refresh()


def close_bar() -> None:
    with _state.lock:
        if _state.bar is not None:
            _state.bar.close()
            _state.bar = None


def _on_fd(stream: IO[str], fd: int) -> bool:
    """``stream`` writes to file descriptor ``fd`` (not so in a Jupyter kernel, whose ``sys.stdout``
    sends to the notebook)."""
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


@contextmanager
def capture(log_dir: str | os.PathLike) -> Iterator[Path]:
    """Send file descriptors 1 and 2 of this process (and of what it starts) to a new log file
    in ``log_dir``; :func:`say` and :func:`stream` keep the console. Restored on exit.

    The console is what ``sys.stdout`` and ``sys.stderr`` were: the terminal behind descriptors 1
    and 2, or, in a notebook, the kernel's streams, which are then pointed at the log too (Ray
    prints the lines it forwards to ``sys.stdout``)."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"adcs-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    consoles = sys.stdout, sys.stderr
    swapped = [not _on_fd(s, fd) for s, fd in zip(consoles, (1, 2))]  # a notebook's streams
    _state.out, _state.err = (console if swap else os.fdopen(os.dup(fd), "w", buffering=1)
                              for console, swap, fd in zip(consoles, swapped, saved))
    _state.log_path = path
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    if swapped[0]:
        sys.stdout = open(1, "w", buffering=1, closefd=False)
    if swapped[1]:
        sys.stderr = open(2, "w", buffering=1, closefd=False)
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # The streams put in for a notebook's stay open: a logging handler made meanwhile (Ray's,
        # on its first import) keeps writing to descriptor 2, which is the kernel's again.
        sys.stdout, sys.stderr = consoles
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        with _state.lock:
            for console, swap in zip((_state.out, _state.err), swapped):
                if console is not None and not swap:  # (a notebook's own streams stay open)
                    console.close()
            _state.out = _state.err = None


def job_log_dir(output_dir: str) -> str:
    """Where a job's console capture starts its log (the run's directory once the run exists,
    :func:`move_log`): the job's local output directory when it can hold it, else the temp
    directory (a bad output_dir is reported by the job itself)."""
    import tempfile

    from . import storage

    if storage.is_local(output_dir):
        where = storage.local_path(output_dir)
        try:
            where.mkdir(parents=True, exist_ok=True)
            if os.access(where, os.W_OK):
                return str(where)
        except OSError:
            pass
    return tempfile.gettempdir()


def move_log(directory: str | os.PathLike, name: str = "adcs.log") -> Path | None:
    """Move the open log into ``directory`` (the run's own) once the run is known; the file
    stays open, so nothing is lost. On another file system it stays where it is."""
    if _state.log_path is None:
        return None
    dest = Path(directory) / name
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(_state.log_path, dest)
        _state.log_path = dest
    except OSError:
        pass
    return _state.log_path


def show_forwarded(lines, err: bool = False, source: tuple = ()) -> None:
    """Lines another process printed (Ray forwards them to the driver): our marked ones to the
    console, without the mark, once each; the rest stay in the log (``distributed.cluster``
    hooks this in). ``source``: the process, e.g. ``(node ip, pid)``."""
    for line in lines:
        found = _MARKED.search(line)
        if found is None:
            continue
        key = (*source, err, found.group(2), found.group(3))
        with _state.lock:
            if key in _state.shown:  # forwarded again (see the module's docstring)
                continue
            _state.shown.add(key)
        _show(found.group(3), err=err, epoch=bool(found.group(1)))


__all__ = ["capture", "capturing", "close_bar", "epoch_bar", "job_log_dir", "log_path", "move_log", "open_bar",
           "say", "set_bar", "show_forwarded", "stream"]
