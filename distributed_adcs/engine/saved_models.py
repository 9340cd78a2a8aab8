"""The models a checkpoint holds, rebuilt from the checkpoint alone: no data set, no data code.

A checkpoint carries its job's config (the model's name and parameters, ``config``) and the
model's shape (``model_shape``: class count, image channels and side, and the per-channel mean
and std the model normalises its [0, 1] input with), so the model is rebuilt without reading the
data the job trained on; checkpoints written before ``model_shape`` existed name their data
instead (``adcs evaluate`` then learns the shape from it). This module imports neither the data
package nor Ray nor MLflow: ``tests/test_model_logging.py`` rebuilds a model in a process where
importing ``distributed_adcs.data`` fails.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from ..config import JobConfig, config_from_dict
from ..models import AdcsModel, ModelShape, build_model
from ..specs import params_kwargs

SHAPE_KEY = "model_shape"  # the checkpoint's entry: ModelShape's fields, mean and std as lists


def build_job_model(cfg: JobConfig, shape: ModelShape) -> AdcsModel:
    """The job's model (``model.name`` and ``model.params``) for inputs and classes of ``shape``."""
    return build_model(cfg.model.name, num_classes=shape.num_classes, in_channels=shape.in_channels,
                       image_size=shape.image_size, mean=shape.mean, std=shape.std, **params_kwargs(cfg.model.params))


def shape_entry(shape: ModelShape) -> dict[str, Any]:
    """``shape`` as plain values (what ``torch.load(weights_only=True)`` reads back)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(shape).items()}


def checkpoint_shape(payload: dict[str, Any]) -> ModelShape | None:
    """The model's shape stored in a checkpoint; None for one written before it was stored."""
    entry = payload.get(SHAPE_KEY)
    if entry is None:
        return None
    return ModelShape(num_classes=int(entry["num_classes"]), in_channels=int(entry["in_channels"]),
                      image_size=int(entry["image_size"]), mean=tuple(float(m) for m in entry["mean"]),
                      std=tuple(float(s) for s in entry["std"]))


def check_same_input(saved: ModelShape, data: ModelShape, where: str) -> None:
    """A saved model is evaluated only on data of its classes and image shape (its normalisation
    is its own: it may differ with ``data.limit``)."""
    ours = (saved.num_classes, saved.in_channels, saved.image_size)
    theirs = (data.num_classes, data.in_channels, data.image_size)
    if ours != theirs:
        raise ValueError(f"{where}: its model takes {saved.in_channels}x{saved.image_size}x{saved.image_size} images of "
                         f"{saved.num_classes} classes, the data {data.in_channels}x{data.image_size}x"
                         f"{data.image_size} images of {data.num_classes}")


def evaluated_weights(payload: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts of the models a job's final evaluation tested: ``"last"``, the last epoch's
    weights as validation and testing ran them (the weight average when ``train.ema_decay`` is on,
    as ``Job.eval_model``), and ``"best"``, the best epoch's by validation robust accuracy (the
    model that was validated, so the average too), when ``eval.keep_best`` kept one."""
    ema = payload.get("ema")
    out = {"last": ema["model"] if ema else payload["model"]}
    if payload.get("best"):
        out["best"] = payload["best"]["model"]
    return out


def saved_models(payload: dict[str, Any]) -> dict[str, AdcsModel]:
    """:func:`evaluated_weights` as models in eval mode on the CPU, in float32, built from the
    checkpoint alone.

    Raises:
        ValueError: the checkpoint predates ``model_shape`` (its data set says the shape).
    """
    shape = checkpoint_shape(payload)
    if shape is None:
        raise ValueError(f"the checkpoint has no {SHAPE_KEY} (written before checkpoints described their model): "
                         f"its model is rebuilt from its data set only, by adcs evaluate")
    cfg = config_from_dict(_yaml(payload["config"]))
    out = {}
    for which, state in evaluated_weights(payload).items():
        model = build_job_model(cfg, shape)
        model.load_state_dict(state)
        out[which] = model.eval()
    return out


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text) or {}
