"""Progress bars for long loops: shown on a terminal, silent in logs, CI and ``--quiet``."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar of this process off (``adcs --quiet``)."""
    global _QUIET
    _QUIET = quiet


def enabled() -> bool:
    return not _QUIET and sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr when a person is watching."""
    if not enabled():
        yield from iterable
        return
    yield from tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, file=sys.stderr)
