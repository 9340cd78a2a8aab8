"""Checkpoints that ``torch.load(weights_only=True)`` can read: tensors, numbers, strings.

Layout (a dict): ``model``, ``optimizer``, ``schedule`` (state dicts), ``epoch`` (the number of
epochs completed), ``coreset`` (``{"indices", "weights", "epoch"}`` global indices or None),
``rng`` (torch/CUDA generator states), ``config`` (the job's YAML text), ``metrics`` (those the
run records for the last epoch completed: a resume records them when the job died before it had),
``ema`` (the weight average and its step count, or None) and ``best`` (the best epoch's model by
validation robust accuracy, that epoch and its accuracy, or None; ``engine/ema.py``) and
``model_shape`` (the model's class count, image channels and side, mean and std: with ``config``
it rebuilds the model without the data set, ``engine/saved_models.py``).
Writes are atomic (temporary file, then rename) so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import hashlib

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    buffer = io.BytesIO()  # serialised in memory, then written by Python: a full disk is an
    torch.save(payload, buffer)  # OSError naming the file, not torch's "unexpected pos" RuntimeError
    try:
        tmp.write_bytes(buffer.getbuffer())
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(tmp)) from None
    os.replace(tmp, path)
    return path


REQUIRED = ("model", "epoch", "config")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file; only tensors and plain values are unpickled (``weights_only``),
    so a file with pickled code is refused, not run.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming the file: not a checkpoint (unreadable, a pickle with code
            in it, or a dict without this package's keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip/pickle errors, UnpicklingError for code payloads, EOFError, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err):
            reason = "it holds pickled objects other than tensors (refused: unpickling them could run code)"
        raise ValueError(f"{path}: not a checkpoint of adcs train ({reason[:200]})") from None
    return _checked(payload, str(path))


def load_checkpoint_bytes(data: bytes) -> dict[str, Any]:
    """A checkpoint from its file's bytes (sent through Ray's object store), on the CPU."""
    return _checked(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), "checkpoint bytes")


def _checked(payload: Any, where: str) -> dict[str, Any]:
    missing = [k for k in REQUIRED if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise ValueError(f"{where}: not a checkpoint of adcs train (no {', '.join(missing)})")
    return payload


def check_fits(payload: dict[str, Any], cfg_yaml: str, where: str) -> None:
    """A checkpoint continues or evaluates only the job it came from: the same model section and
    data set. ``cfg_yaml`` is this job's config (``config.dump_yaml``)."""
    import yaml

    theirs, ours = yaml.safe_load(payload["config"]) or {}, yaml.safe_load(cfg_yaml) or {}
    model = theirs.get("model", {})
    diff = [f"model.{k}={v!r} (checkpoint: {model[k]!r})" for k, v in ours.get("model", {}).items()
            if k in model and model[k] != v]
    if theirs.get("data", {}).get("name") != ours.get("data", {}).get("name"):
        diff.append(f"data.name={ours['data']['name']!r} (checkpoint: {theirs.get('data', {}).get('name')!r})")
    if diff:
        raise ValueError(f"{where} was written by another job than this one: {', '.join(diff)}")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under a DDP wrapper (Ray Train does not wrap with one worker)."""
    return getattr(model, "module", model)


def state_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, in order: equal digests mean bit-identical models."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
