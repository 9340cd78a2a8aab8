"""Mini-batches straight from an ImageSet's uint8 tensor (no per-example Dataset objects)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from distributed_adcs.data.augment import FRAMED, Augmentation, CropFlip
from distributed_adcs.data.types import ImageSet


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous; compare by identity
class Batch:
    """One mini-batch.

    Attributes:
        x: float32 [B, C, H, W] in [0, 1] (after augmentation, if any).
        y: int64 [B] labels.
        index: int64 [B] global indices (position in the source split).
        position: int64 [B] positions into the ImageSet the batch was drawn from.
        weight: float32 [B] per-example weights (ones when none were given).
        frame: the batch's random crops and flips, when the augmentation can say what it drew
            (``crop_flip``): per-example tensors kept in the un-augmented frame follow it.
    """

    x: Tensor
    y: Tensor
    index: Tensor
    position: Tensor
    weight: Tensor
    frame: CropFlip | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])


def batch_sizes(n: int, batch_size: int, drop_last: bool = False, min_batch: int = 1) -> list[int]:
    """The sizes of an epoch's batches over ``n`` examples.

    Args:
        n: number of examples.
        batch_size: examples per batch (>= 1).
        drop_last: drop a final batch smaller than ``batch_size``.
        min_batch: a final batch smaller than this joins the one before it (training uses 2:
            BatchNorm cannot take batch statistics of one example, e.g. 129 examples in
            batches of 128 become one batch of 129).

    Returns:
        Positive sizes summing to ``n`` (to ``n - n % batch_size`` when dropping).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sizes = [batch_size] * (n // batch_size)
    if n % batch_size and not drop_last:
        sizes.append(n % batch_size)
    if len(sizes) > 1 and sizes[-1] < min_batch:
        last = sizes.pop()
        sizes[-1] += last
    return sizes


def num_batches(n: int, batch_size: int, drop_last: bool = False, min_batch: int = 1) -> int:
    """Batches per epoch over ``n`` examples (see :func:`batch_sizes`).

    Returns:
        ``n // batch_size`` when dropping, else ``ceil(n / batch_size)`` (one fewer when a
        final batch below ``min_batch`` joins the one before).
    """
    return len(batch_sizes(n, batch_size, drop_last, min_batch))


def _checked_subset(size: int, positions: Tensor | None, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    if positions is None:
        positions = torch.arange(size, dtype=torch.int64)
    positions = positions.to(torch.int64).reshape(-1).cpu()
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= size):
        raise ValueError(f"positions must lie in [0, {size}), got [{int(positions.min())}, {int(positions.max())}]")
    if weights is None:
        weights = torch.ones(positions.shape[0], dtype=torch.float32)
    weights = weights.to(torch.float32).reshape(-1).cpu()
    if weights.shape != positions.shape:
        raise ValueError(
            f"weights must align with positions: {weights.shape[0]} weights, {positions.shape[0]} positions"
        )
    return positions, weights


def iterate_batches(
    data: ImageSet,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    positions: Tensor | None = None,
    weights: Tensor | None = None,
    augment: Augmentation | None = None,
    drop_last: bool = False,
    min_batch: int = 1,
    device: torch.device | str | None = None,
) -> Iterator[Batch]:
    """One epoch of mini-batches over ``data`` (or the subset ``positions`` of it).

    Args:
        data: the image set.
        batch_size: examples per batch.
        shuffle: visit the examples in a random order drawn from ``generator``.
        generator: source of the shuffle order and of ``augment``'s randomness; seed it
            for a reproducible epoch. None uses torch's global generator.
        positions: int64 positions into ``data`` to visit (a coreset); all when None.
            Repeated positions are visited as often as they appear.
        weights: per-example weights aligned with ``positions`` (ones when None).
        augment: ``fn(x, generator) -> x`` applied to each float batch.
        drop_last: drop a final batch smaller than ``batch_size``.
        min_batch: a final batch smaller than this joins the one before (:func:`batch_sizes`).
        device: where the batch tensors go; the images' device when None. Only the
            selected uint8 rows are moved, before the float conversion.

    Returns:
        An iterator of :class:`Batch`; ``num_batches(len(positions), batch_size, drop_last, min_batch)`` long.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    positions, weights = _checked_subset(len(data), positions, weights)  # validated now, not at first next()
    target = torch.device(device) if device is not None else data.images.device
    if shuffle:
        draw_device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(positions.shape[0], generator=generator, device=draw_device).cpu()
        positions, weights = positions[order], weights[order]
    sizes = batch_sizes(positions.shape[0], batch_size, drop_last, min_batch)
    keep = sum(sizes)
    positions, weights = positions[:keep], weights[:keep]
    return _generate(data, positions.split(sizes), weights.split(sizes), augment, generator, target)


def _generate(
    data: ImageSet,
    position_chunks: tuple[Tensor, ...],
    weight_chunks: tuple[Tensor, ...],
    augment: Augmentation | None,
    generator: torch.Generator | None,
    target: torch.device,
) -> Iterator[Batch]:
    for chunk, weight in zip(position_chunks, weight_chunks):
        source = chunk.to(data.images.device)
        # index_select: an order of magnitude faster than advanced indexing on CPU.
        x = data.images.index_select(0, source).to(target).to(torch.float32).div_(255.0)
        frame = None
        if augment in FRAMED:  # the same draws as augment(x, generator), kept
            x, frame = FRAMED[augment](x, generator)
        elif augment is not None:
            x = augment(x, generator)
        yield Batch(
            x=x,
            y=data.labels.index_select(0, source).to(target),
            index=data.indices.index_select(0, source).to(target),
            position=chunk.to(target),
            weight=weight.to(target),
            frame=frame,
        )
