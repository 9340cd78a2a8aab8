"""Progress bars for long loops: shown on a terminal and in a Jupyter notebook, silent in logs,
CI and ``--quiet``.

Every bar is ``tqdm.auto``'s: a notebook widget where a Jupyter kernel runs (and ipywidgets is
installed), else a text bar on the console's stderr (``console.stream()``), which stays the
terminal while the job's own output is captured to its log file."""

from __future__ import annotations

import os
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

from .console import stream

T = TypeVar("T")
_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar of this process off (``adcs --quiet``)."""
    global _QUIET
    _QUIET = quiet


def in_notebook() -> bool:
    """``tqdm.auto`` chose notebook bars: a Jupyter kernel runs this process."""
    return any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)


def enabled() -> bool:
    """Whether bars show: not ``--quiet``, not ``TQDM_DISABLE`` (tqdm's own switch, decided here
    so that a bar that opens is a real one), and a person watching (a terminal or a notebook)."""
    off = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")
    return not _QUIET and not off and (in_notebook() or stream().isatty())


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr when a person is watching."""
    if not enabled():
        yield from iterable
        return
    yield from tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, file=stream(), disable=False)


def epoch_line(epoch: int, epochs: int, metrics: dict) -> str:
    """The one-line summary printed after every epoch (in-process and Ray Train alike)."""
    val = (f"val_clean={metrics['val_clean_acc']:.4f} val_robust={metrics['val_robust_acc']:.4f} "
           if "val_robust_acc" in metrics else "")
    return (f"epoch {epoch + 1}/{epochs} loss={metrics['train_loss']:.4f} {val}"
            f"time={metrics['epoch_time_s']:.1f}s examples={int(metrics['train_examples'])}")


def final_line(metrics: dict) -> str:
    """The one-line summary of the final test evaluation (per-class accuracies go to MLflow only)."""
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("test_") and "_class" not in k)
