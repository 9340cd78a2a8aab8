"""PNG plots logged with every run: accuracy over time and epochs, coreset class histograms;
and a metric of several runs against wall-clock time (a sweep's trials, bench_quality's arms).

They are drawn from what the run itself logged (metric history and coreset Parquet files),
so the in-process and the Ray Train paths get the same plots.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from .mlflow_run import RunTracker  # noqa: E402


def _history(tracker: RunTracker, key: str) -> dict[int, float]:
    return {m.step: m.value for m in tracker.client.get_metric_history(tracker.open_run_id, key)}


def accuracy_figure(tracker: RunTracker, selection_epochs: list[int], warmup_epochs: int):
    """Clean and robust validation accuracy against epoch and against wall-clock time."""
    clean, robust = _history(tracker, "val_clean_acc"), _history(tracker, "val_robust_acc")
    wall = _history(tracker, "wall_time_s")
    epochs = sorted(clean)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, xs, label in ((axes[0], [e + 1 for e in epochs], "epoch"),
                          (axes[1], [wall.get(e, float("nan")) / 60 for e in epochs], "wall-clock time (min)")):
        ax.plot(xs, [clean[e] for e in epochs], "o-", label="clean")
        ax.plot(xs, [robust.get(e, float("nan")) for e in epochs], "s-", label="robust (PGD)")
        to_x = (lambda e: e) if label == "epoch" else (lambda e: wall.get(e - 1, 0.0) / 60)
        if warmup_epochs and selection_epochs:
            ax.axvspan(to_x(0), to_x(warmup_epochs), color="0.9", label="warm start (full data)")
        for i, e in enumerate(selection_epochs):
            ax.axvline(to_x(e), color="tab:red", ls="--", lw=1, label="coreset selection" if i == 0 else None)
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(tracker.client.get_run(tracker.open_run_id).info.run_name)
    return fig


def curve_over_time(client: MlflowClient, run_id: str, metric: str) -> list[tuple[float, float]]:
    """``(wall-clock minutes, value)`` at every step of a run that logged both ``metric`` and
    ``wall_time_s``, in step order."""
    values = {m.step: m.value for m in client.get_metric_history(run_id, metric)}
    wall = {m.step: m.value for m in client.get_metric_history(run_id, "wall_time_s")}
    return [(wall[s] / 60, values[s]) for s in sorted(values) if s in wall]


def over_time_figure(curves: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, xlabel: str, ylabel: str,
                     title: str | None = None):
    """One line per ``(label, [(minutes, value), ...])``: runs (a sweep's trials, a benchmark's
    arms) compared against wall-clock time. Empty curves are left out."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    for label, points in curves:
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], "o-", ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def coreset_histogram(path: str | Path, num_classes: int):
    """Selected examples and their total weight per class for one coreset file."""
    table = pq.read_table(path).to_pydict()
    counts, weights = [0] * num_classes, [0.0] * num_classes
    for label, weight in zip(table["label"], table["weight"]):
        counts[label] += 1
        weights[label] += weight
    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    xs = range(num_classes)
    ax.bar([x - 0.2 for x in xs], counts, width=0.4, label="selected examples")
    ax.bar([x + 0.2 for x in xs], weights, width=0.4, label="total weight (examples represented)")
    ax.set_xlabel("class")
    ax.set_xticks(list(xs))
    ax.set_title(f"coreset of epoch {table['epoch'][0] if table['epoch'] else '?'}")
    ax.legend(fontsize=8)
    return fig


def log_accuracy_plot(tracker: RunTracker, *, selection_epochs: list[int], warmup_epochs: int) -> None:
    """Draw and log ``plots/accuracy.png`` from the run's metric history."""
    with tempfile.TemporaryDirectory() as tmp:
        fig = accuracy_figure(tracker, selection_epochs, warmup_epochs)
        fig.savefig(Path(tmp) / "accuracy.png", dpi=110)
        plt.close(fig)
        tracker.log_artifact(Path(tmp) / "accuracy.png", "plots")


def log_coreset(tracker: RunTracker, path: str | Path, num_classes: int) -> None:
    """Log a coreset Parquet file under ``coresets/`` and its class histogram under ``plots/``."""
    path = Path(path)
    tracker.log_artifact(path, "coresets")
    with tempfile.TemporaryDirectory() as tmp:
        fig = coreset_histogram(path, num_classes)
        png = Path(tmp) / (path.stem + ".png")
        fig.savefig(png, dpi=110)
        plt.close(fig)
        tracker.log_artifact(png, "plots")
