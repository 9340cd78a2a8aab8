"""Batch augmentations on float [0, 1] NCHW tensors, driven by a torch.Generator.

Every augmentation is ``fn(x, generator) -> x``: random draws come from ``generator`` (on
the generator's device, then moved to ``x``'s), so a seeded generator replays the same
augmentation on CPU and CUDA alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True, eq=False)
class CropFlip:
    """One batch's random crops and flips, kept so that a per-example tensor stored in the
    un-augmented frame (a cached perturbation, engine/ledger.py) can follow its image.

    Attributes:
        offsets: int64 [2, B] crop offsets (rows, columns) into the zero-padded image.
        flips: bool [B] whether each image is mirrored left-right after the crop.
        padding: zero padding in pixels on every side.
    """

    offsets: Tensor
    flips: Tensor
    padding: int

    def _source(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """For each output pixel, its row and column in the padded image: ``[B, H]``, ``[B, W]``."""
        row_base = torch.arange(height, device=self.offsets.device)
        col_base = torch.arange(width, device=self.offsets.device)
        rows = self.offsets[0][:, None] + row_base
        cols = self.offsets[1][:, None] + torch.where(self.flips[:, None], width - 1 - col_base, col_base)
        return rows, cols

    def apply(self, x: Tensor) -> Tensor:
        """``x`` (float [B, C, H, W], un-augmented frame) cropped and flipped as the batch's images."""
        batch, channels, height, width = x.shape
        p = self.padding
        rows, cols = self._source(height, width)
        padded = F.pad(x, (p, p, p, p)).reshape(batch, channels, -1)
        # One gather over each image's flattened padded plane (faster than 4-D advanced indexing).
        flat = (rows[:, :, None] * (width + 2 * p) + cols[:, None, :]).reshape(batch, 1, height * width)
        out = padded.gather(2, flat.expand(batch, channels, height * width))
        return out.reshape(batch, channels, height, width)

    def back(self, seen: Tensor, stored: Tensor) -> Tensor:
        """The inverse of :meth:`apply` where it has one: ``stored`` (un-augmented frame) with every
        pixel the crop kept replaced by its value in ``seen`` (augmented frame). Pixels the crop
        cut off keep their stored values; ``seen``'s values on the zero padding are dropped."""
        batch, channels, height, width = seen.shape
        p = self.padding
        rows, cols = self._source(height, width)
        rows, cols = rows - p, cols - p  # in the un-augmented image; outside it: padding
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        target = rows[:, :, None] * width + cols[:, None, :]  # [B, H, W] flat index in the image
        target = torch.where(inside, target, height * width).reshape(batch, 1, -1)  # padding: a spare slot
        out = torch.cat([stored.reshape(batch, channels, -1), stored.new_zeros(batch, channels, 1)], dim=2)
        # a translation and a mirror are injective: every kept pixel has its own target
        out.scatter_(2, target.expand(batch, channels, -1), seen.reshape(batch, channels, -1))
        out = out[:, :, :-1]
        return out.reshape(stored.shape)


def draw_crop_flip(x: Tensor, generator: torch.Generator | None = None,
                   padding: int = CROP_PADDING) -> tuple[Tensor, CropFlip]:
    """:func:`crop_flip`, also returning the drawn :class:`CropFlip` (the same draws, in the same order)."""
    batch = x.shape[0]
    draw = _draw_device(generator)
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=draw).to(x.device)
    flips = torch.randint(0, 2, (batch,), generator=generator, device=draw).to(x.device).bool()
    frame = CropFlip(offsets, flips, padding)
    return frame.apply(x), frame


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
    return draw_crop_flip(x, generator, padding)[0]


AUGMENTATIONS: dict[str, Augmentation] = {"none": no_augment, "crop_flip": crop_flip}

# augmentations that can also return their draws, for per-example tensors that must follow them
FRAMED: dict[Augmentation, Callable[..., tuple[Tensor, CropFlip]]] = {crop_flip: draw_crop_flip}


def default_augmentation(name: object) -> str:
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
