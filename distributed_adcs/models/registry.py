"""The model registry: a plain dict from name to builder, and ``build_model``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from distributed_adcs.models.base import AdcsModel, ModelSpec
from distributed_adcs.models.resnet import preact_resnet18, resnet18, wide_resnet
from distributed_adcs.models.small_cnn import small_cnn

MODELS: dict[str, Callable[[ModelSpec], AdcsModel]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18,
    "preact_resnet18": preact_resnet18,
    "wide_resnet": wide_resnet,
}


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    depth: int = 28,
    width: int = 10,
) -> AdcsModel:
    """Build a registered model on the current default device, in train mode.

    Args:
        name: a key of ``MODELS``.
        num_classes: number of logits.
        in_channels: image channels.
        image_size: side of the square input in pixels.
        mean: per-channel mean of [0, 1] pixels, applied inside the model.
        std: per-channel standard deviation, applied inside the model.
        depth: Wide ResNet depth (6n+4); ignored by the other models.
        width: Wide ResNet widening factor; ignored by the other models.

    Returns:
        The model; it expects float images in [0, 1], NCHW.

    Raises:
        ValueError: for an unknown name or invalid sizes.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    spec = ModelSpec(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        depth=depth,
        width=width,
    )
    return MODELS[name](spec)
