"""Parquet tables of coresets: what a run records of each selection (written by the process that
records the epoch: this one, or a Ray Train worker; read back by tests and users)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch


def coreset_table(indices: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, epoch: int,
                  extra: dict[str, torch.Tensor] | None = None) -> pa.Table:
    """One row per selected example: global ``index``, ``weight``, ``label``, ``epoch`` (+extra)."""
    n = int(indices.numel())
    cols = {"index": pa.array(indices.cpu().numpy().astype("int64")),
            "weight": pa.array(weights.cpu().float().numpy()),
            "label": pa.array(labels.cpu().numpy().astype("int64")),
            "epoch": pa.array([int(epoch)] * n, type=pa.int64())}
    for name, values in (extra or {}).items():
        cols[name] = pa.array(values.cpu().numpy())
    return pa.table(cols)


def write_coreset(path: str | Path, table: pa.Table) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_selection(path: str | Path, train, selection) -> Path:
    """A selection (``engine.job.Selection``) of ``train`` (an ``ImageSet``) as Parquet:
    global index, weight, label, selection epoch, and the selection's extra columns (shard)."""
    pos = selection.positions.cpu()
    table = coreset_table(train.indices[pos], selection.weights, train.labels[pos], selection.epoch, selection.extra)
    return write_coreset(path, table)
