"""Shared bits of the benchmark scripts: the evidence header and timing helpers."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch


def host() -> str:
    """The machine and versions a benchmark ran on: its evidence, in the header and in result files."""
    import ray

    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"ray {ray.__version__}, python {platform.python_version()}")


def header(title: str, repeats: int) -> str:
    return (f"# {title}\n# host: {host()}\n"
            f"# repeats: {repeats} (medians reported; the machine may be shared, so compare ratios)")


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    line = " | ".join(c.ljust(widths[c]) for c in columns)
    sep = "-|-".join("-" * widths[c] for c in columns)
    body = "\n".join(" | ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns) for r in rows)
    return f"{line}\n{sep}\n{body}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)
