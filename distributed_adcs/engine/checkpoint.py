"""Checkpoints that ``torch.load(weights_only=True)`` can read: tensors, numbers, strings.

Layout (a dict): ``model``, ``optimizer``, ``schedule`` (state dicts), ``epoch`` (the number of
epochs completed), ``coreset`` (``{"indices", "weights", "epoch"}`` global indices or None),
``rng`` (torch/CUDA generator states), ``config`` (the job's YAML text).
Writes are atomic (temporary file, then rename) so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint_bytes(data: bytes) -> dict[str, Any]:
    """A checkpoint from its file's bytes (sent through Ray's object store), on the CPU."""
    import io

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under a DDP wrapper (Ray Train does not wrap with one worker)."""
    return getattr(model, "module", model)
