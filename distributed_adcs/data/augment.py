"""Batch augmentations on float [0, 1] NCHW tensors, driven by a torch.Generator.

Every augmentation is ``fn(x, generator) -> x``: random draws come from ``generator`` (on
the generator's device, then moved to ``x``'s), so a seeded generator replays the same
augmentation on CPU and CUDA alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distributed_adcs.specs.datasets import get_dataset

Augmentation = Callable[[Tensor, "torch.Generator | None"], Tensor]

CROP_PADDING = 4  # pixels of zero padding around each image before the random crop


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def no_augment(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Identity.

    Args:
        x: float [B, C, H, W].
        generator: unused.

    Returns:
        ``x`` itself.
    """
    return x


def crop_flip(x: Tensor, generator: torch.Generator | None = None, padding: int = CROP_PADDING) -> Tensor:
    """Random crop after zero padding, then a random horizontal flip, per image.

    Vectorised: one gather for the whole batch, no per-image loop. Each image gets its own crop offsets,
    uniform in ``0..2*padding`` for rows and columns, and is mirrored with probability 1/2.

    Args:
        x: float [B, C, H, W].
        generator: source of the offsets and flips; torch's global generator when None.
        padding: zero padding in pixels on every side.

    Returns:
        A new tensor of ``x``'s shape, dtype and device.
    """
    batch, channels, height, width = x.shape
    draw = _draw_device(generator)
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=draw).to(x.device)
    flips = torch.randint(0, 2, (batch,), generator=generator, device=draw).to(x.device).bool()
    padded_width = width + 2 * padding
    padded = F.pad(x, (padding, padding, padding, padding)).reshape(batch, channels, -1)
    row_base = torch.arange(height, device=x.device)
    col_base = torch.arange(width, device=x.device)
    rows = offsets[0][:, None] + row_base  # [B, H] rows of the padded image
    cols = offsets[1][:, None] + torch.where(flips[:, None], width - 1 - col_base, col_base)  # [B, W]
    # One gather over each image's flattened padded plane (faster than 4-D advanced indexing).
    flat = (rows[:, :, None] * padded_width + cols[:, None, :]).reshape(batch, 1, height * width)
    out = padded.gather(2, flat.expand(batch, channels, height * width))
    return out.reshape(batch, channels, height, width)


AUGMENTATIONS: dict[str, Augmentation] = {"none": no_augment, "crop_flip": crop_flip}


def default_augmentation(name: str) -> str:
    """The usual augmentation of a dataset: its registry entry's ``augment``.

    Args:
        name: dataset registry name.

    Returns:
        A key of :data:`AUGMENTATIONS`.

    Raises:
        ValueError: an unknown dataset.
    """
    return get_dataset(name).augment


def get_augmentation(choice: str, dataset: str | None = None) -> Augmentation:
    """Look up an augmentation, resolving "auto" to the dataset's default.

    Args:
        choice: a key of :data:`AUGMENTATIONS`, or "auto".
        dataset: dataset name, used when ``choice`` is "auto".

    Returns:
        The augmentation function.

    Raises:
        ValueError: unknown choice (the message lists the valid ones), or "auto" for an unknown dataset.
    """
    key = default_augmentation(dataset) if choice == "auto" else choice
    try:
        return AUGMENTATIONS[key]
    except KeyError:
        raise ValueError(f"unknown augmentation {choice!r}; valid: auto, {', '.join(sorted(AUGMENTATIONS))}") from None
