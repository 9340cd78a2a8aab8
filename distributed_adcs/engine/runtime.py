"""Devices, seeds and reproducible random streams."""

from __future__ import annotations

import hashlib
import random
import signal
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import torch

if TYPE_CHECKING:
    from ..config import JobConfig


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible")
    return torch.device(name)


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed for a named stream, e.g. ``derive_seed(0, "attack", epoch, shard)``.

    Stable across processes and Python versions (no ``hash()``), so a shard's randomness does
    not depend on which worker or actor processes it.
    """
    text = ":".join([str(seed), *map(str, keys)]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *keys: object, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g


def budget_and_seed(cfg: "JobConfig", n: int, epoch: int) -> tuple[int, int]:
    """The example budget and the selector's seed of the selection at ``epoch`` over ``n`` examples:
    ``round(coreset.fraction * n)`` (at least one), and the stream ``(seed, "select", epoch)`` cut
    below 2**31. Every selection (from embeddings, labels or training records) draws with these."""
    return max(1, round(cfg.coreset.fraction * n)), derive_seed(cfg.seed, "select", epoch) % (2**31)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@contextmanager
def global_state_kept() -> Iterator[None]:
    """What :func:`seed_everything` and a job change in the process, put back on exit: the global
    random streams (Python's, numpy's when it is loaded, torch's and CUDA's), torch's deterministic
    mode and cuDNN's autotuner flag (``Job`` sets it on a GPU). For a caller that keeps its process
    after the job (the Python API)."""
    numpy = sys.modules.get("numpy")
    saved = (random.getstate(), numpy.random.get_state() if numpy is not None else None, rng_state(),
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        py, np_state, torch_state, deterministic, warn_only, benchmark = saved
        random.setstate(py)
        if np_state is not None:
            numpy.random.set_state(np_state)  # type: ignore[union-attr]
        set_rng_state(torch_state)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def rng_state() -> dict:
    """Global RNG states as tensors/lists, loadable with ``torch.load(weights_only=True)``."""
    state: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`; the states must be CPU byte tensors, wherever they were loaded."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Interrupted(KeyboardInterrupt):
    """The job was stopped by a signal (Ctrl-C's SIGINT, or a SIGTERM from a scheduler or
    ``kill``). A KeyboardInterrupt, so the tracked run is marked KILLED whichever it was."""

    def __init__(self, signum: int, message: str = "interrupted"):
        super().__init__(message)
        self.signum = signum
        self.message = message


def interruption(err: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C or :class:`Interrupted` that ``err`` was raised while handling, if any. A signal
    that lands inside cleanup code can be replaced by the cleanup's own error (seen: SIGTERM inside
    a temporary directory's removal, whose ``os.close`` then failed with EBADF), and the job was
    interrupted all the same."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return err
        seen.add(id(err))
        err = err.__context__
    return None


def raise_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Interrupted`: the run is marked KILLED, as after Ctrl-C, and
    everything the job holds (Ray, its workers and actors) is released on the way out. Installed
    by the ``adcs`` command, which owns its process; the Python API installs no handler."""
    def handler(signum, frame):
        raise Interrupted(signum, "terminated (SIGTERM)")
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. inside a Ray actor): leave it to the host
        pass


@contextmanager
def signal_handlers_kept(*signums: int) -> Iterator[None]:
    """The process's handlers of ``signums`` (default SIGTERM and SIGINT) are put back on exit.

    ``ray.init`` installs its own SIGTERM handler (``sys.exit``) and Ray Train's ``fit`` one for
    SIGINT: around them, whoever owns the process keeps its own (``adcs``: :func:`raise_on_sigterm`;
    a notebook or script calling the API: whatever it had). Off the main thread nothing can be
    installed, so nothing is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in signums or (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:  # None: installed outside Python, nothing to put back
                signal.signal(signum, handler)
