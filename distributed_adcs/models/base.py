"""The contract every model in the zoo follows.

Inputs are float images in [0, 1], NCHW (the RobustBench convention). Each model
normalises them itself as its first step, so attacks, objectives and evaluation
never have to know the dataset statistics. The last layer is always
``model.head`` (an ``nn.Linear``); its input is the penultimate feature vector.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelShape:
    """What a builder needs to know about the data: its input and its classes. The
    architecture's own sizes are its registry entry's params (specs/models.py).

    Attributes:
        num_classes: number of output logits.
        in_channels: image channels (1 for Fashion-MNIST, 3 for CIFAR).
        image_size: side of the square input in pixels; all models pool
            adaptively, so this only matters for validation.
        mean: per-channel mean of the [0, 1] pixels, length ``in_channels``.
        std: per-channel standard deviation, length ``in_channels``, all > 0.
    """

    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for key in ("num_classes", "in_channels", "image_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("mean", "std"):
            if len(getattr(self, key)) != self.in_channels:
                raise ValueError(
                    f"{key} has {len(getattr(self, key))} entries but in_channels={self.in_channels}"
                )
        if not all(s > 0 and math.isfinite(s) for s in self.std):
            raise ValueError(f"std entries must be finite and > 0, got {self.std}")


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics stored as buffers.

    The buffers are persistent, so a checkpoint carries its own normalisation
    and they follow the model across ``.to(device)``.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[1]}"


class AdcsModel(nn.Module, ABC):
    """Base class: ``logits = head(forward_features(normalize(x)))``.

    Subclasses build their trunk in ``__init__``, assign ``self.head`` (an
    ``nn.Linear``) and implement ``forward_features`` and ``perceptual_modules``.
    Penultimate features and intermediate activations are read with the
    context managers in ``capture.py``, never through a flag on ``forward``.
    """

    head: nn.Linear
    # set by set_precision: the forward runs under autocast to this dtype (None: float32). Every
    # forward goes through here (training, attacks, embeddings, evaluation), so one setting
    # covers them all; the logits come back as float32, so losses are computed in float32
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False  # set_precision: inputs are made channels_last (the weights are)

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.normalize = Normalize(shape.mean, shape.std)

    @abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """Map an already normalised batch [B, C, H, W] to features [B, D]."""

    @abstractmethod
    def perceptual_modules(self) -> list[nn.Module]:
        """Intermediate blocks whose outputs define an LPIPS-style distance.

        Returns:
            Submodules that run once per forward, shallowest first, whose
            outputs no later in-place operation modifies (so hooks may keep them).
        """

    def forward(self, x: Tensor) -> Tensor:
        """Args: x: images in [0, 1], [B, C, H, W]. Returns: logits [B, num_classes] (float32)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            return self.head(self.forward_features(self.normalize(x)))
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            logits = self.head(self.forward_features(self.normalize(x)))
        return logits.float()


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def set_precision(model: AdcsModel, precision: str, device: torch.device, channels_last: bool = False) -> AdcsModel:
    """Run ``model``'s forwards in ``precision`` (``fp32``, ``bf16`` or ``fp16``: autocast; the
    weights stay float32) and, with ``channels_last`` on a CUDA device, in NHWC memory layout
    (faster convolutions on tensor cores; on the CPU it is left alone)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    model.autocast_dtype = PRECISIONS[precision]
    if channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions (fan-out, ReLU gain), unit BatchNorm, zero biases.

    The usual initialisation for ReLU residual nets (He et al., 2015).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
