"""``build_model``: a registered model for the data it will see.

The registry itself (``MODELS``, one :class:`~distributed_adcs.specs.models.ModelSpec` per name,
and what a new entry must provide) lives in ``distributed_adcs/specs/models.py``, where the
config reads it without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from distributed_adcs.models.base import AdcsModel, ModelShape
from distributed_adcs.specs import checked_params
from distributed_adcs.specs.models import MODELS, get_model

__all__ = ["MODELS", "build_model"]


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    **params: object,
) -> AdcsModel:
    """Build a registered model on the current default device, in train mode.

    Args:
        name: a key of ``MODELS``.
        num_classes: number of logits.
        in_channels: image channels.
        image_size: side of the square input in pixels.
        mean: per-channel mean of [0, 1] pixels, applied inside the model.
        std: per-channel standard deviation, applied inside the model.
        **params: the entry's own parameters (``wide_resnet``: ``depth``, ``width``), checked
            by its params class; absent ones take its defaults.

    Returns:
        The model; it expects float images in [0, 1], NCHW.

    Raises:
        ValueError: for an unknown name, an unknown or invalid parameter, or invalid sizes.
    """
    kwargs = checked_params(MODELS, name, "model", params)
    shape = ModelShape(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )
    return get_model(name).build_fn()(shape, **kwargs)
