"""Value types of the data layer: in-memory image sets and the raw output of a loader.

Images stay ``uint8`` NCHW in memory (a quarter of the float32 footprint: 47 MB instead of
188 MB for Fashion-MNIST's training split) and become float in [0, 1] one batch at a time.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.fs as pafs
import torch
from torch import Tensor

from distributed_adcs import storage


def _check_images_labels(images: Tensor, labels: Tensor, what: str) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"{what}: images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    if labels.dtype != torch.int64 or labels.dim() != 1:
        raise ValueError(f"{what}: labels must be int64 [N], got {labels.dtype} {tuple(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{what}: {images.shape[0]} images but {labels.shape[0]} labels")


@dataclass(frozen=True)
class DataFiles:
    """The files a loader read a set from, identified without reading them: each file's name,
    size and modification time, what ``make`` and ``rsync`` compare. A new version of a file
    (rewritten, exported again, downloaded again) gets a new modification time, so a new digest;
    hashing the bytes instead would read the whole set on every run (on an object store, a
    download of all of it). A copy whose times were not kept counts as another version.

    Attributes:
        location: the directory (path or URI) that holds them.
        stamps: ``(name relative to location, bytes, mtime in ns)`` per file, in reading order.
    """

    location: str
    stamps: tuple[tuple[str, int, int], ...]

    @property
    def digest(self) -> str:
        """16 hex digits of the SHA-256 of the stamps (MLflow keeps up to 36)."""
        return hashlib.sha256(json.dumps(self.stamps).encode()).hexdigest()[:16]

    @property
    def num_bytes(self) -> int:
        return sum(size for _, size, _ in self.stamps)

    @classmethod
    def of(cls, location: str, paths: Sequence[str]) -> "DataFiles":
        """The stamps of ``paths`` (paths of ``storage.filesystem(location)``: a local path, or
        the ``bucket/key`` form pyarrow lists) from one metadata call each, no byte read.

        Raises:
            FileNotFoundError: one of them is not there.
        """
        fs, base = storage.filesystem(location)
        stamps = []
        for info in fs.get_file_info(list(paths)):
            if info.type != pafs.FileType.File:
                raise FileNotFoundError(f"{info.path}: no such file")
            stamps.append((posixpath.relpath(info.path, base), int(info.size), int(info.mtime_ns or 0)))
        return cls(str(location), tuple(stamps))


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous; compare by identity
class ImageSet:
    """A labelled image set held as uint8 tensors.

    Attributes:
        images: uint8 [N, C, H, W], pixel values 0..255.
        labels: int64 [N], class ids in [0, num_classes).
        indices: int64 [N], each example's position in its source split (the dataset's own
            train or test split); coreset selection refers to examples by this index.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor

    def __post_init__(self) -> None:
        _check_images_labels(self.images, self.labels, "ImageSet")
        if self.indices.dtype != torch.int64 or self.indices.shape != self.labels.shape:
            raise ValueError(
                f"ImageSet: indices must be int64 [N] matching labels, got {self.indices.dtype} "
                f"{tuple(self.indices.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def float_images(self, positions: Tensor | None = None) -> Tensor:
        """Images as float32 in [0, 1].

        Args:
            positions: optional int64 positions into this set (not global indices); all
                images when None.

        Returns:
            float32 [M, C, H, W] on the images' device.
        """
        raw = self.images if positions is None else self.images.index_select(0, positions.to(self.images.device))
        return raw.to(torch.float32).div_(255.0)


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous; compare by identity
class Splits:
    """Train / validation / test views of one dataset plus what a model needs to know.

    Attributes:
        name: registry name of the dataset.
        train: the training examples (first ``limit`` of the source train split minus the
            validation hold-out).
        val: the last ``val_size`` examples of the source train split.
        test: the source test split.
        num_classes: number of classes.
        mean: per-channel mean of [0, 1] pixels, for the model's internal normalisation.
        std: per-channel standard deviation of [0, 1] pixels.
        image_shape: (C, H, W).
        files: the files the set was read from (None: not from files).
    """

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_shape: tuple[int, int, int]
    files: DataFiles | None = None

    @property
    def num_train(self) -> int:
        return len(self.train)


@dataclass(frozen=True)
class DataSummary:
    """What a process that trains on no image needs to know of a job's data (a Ray Train job's
    driver: its first line and the class count of the coreset histograms): see
    :func:`distributed_adcs.data.splits.describe_splits`."""

    name: str
    num_train: int
    num_classes: int
    files: DataFiles | None = None  # the files the set is read from


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous; compare by identity
class RawDataset:
    """What a registered loader returns: a dataset's full source splits.

    Attributes:
        train_images: uint8 [N, C, H, W] of the source training split.
        train_labels: int64 [N].
        test_images: uint8 [M, C, H, W] of the source test split.
        test_labels: int64 [M].
        num_classes: number of classes.
        mean: per-channel mean of [0, 1] pixels (length C).
        std: per-channel standard deviation of [0, 1] pixels (length C).
        train_positions: when the loader read only part of the training split (a Parquet set
            with ``limit``), the ascending positions in it of the rows held; None: all rows.
        train_total: the training split's size (the rows held when None).
        files: the files it was read from (``data.files.data_files``); None: not from files.
    """

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_positions: Tensor | None = None
    train_total: int | None = None
    files: DataFiles | None = None

    def __post_init__(self) -> None:
        _check_images_labels(self.train_images, self.train_labels, "train split")
        if self.train_positions is not None and self.train_positions.numel() != self.train_labels.numel():
            raise ValueError(f"{self.train_positions.numel()} train positions for {self.train_labels.numel()} rows")
        _check_images_labels(self.test_images, self.test_labels, "test split")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"train images are {tuple(self.train_images.shape[1:])} but test images are "
                f"{tuple(self.test_images.shape[1:])}"
            )
        channels = self.train_images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean/std need {channels} entries, got {len(self.mean)} and {len(self.std)}")
        for split, labels in (("train", self.train_labels), ("test", self.test_labels)):
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(
                    f"{split} labels must lie in [0, {self.num_classes}), got "
                    f"[{int(labels.min())}, {int(labels.max())}]"
                )

    @property
    def num_train(self) -> int:
        """Size of the source training split (whether or not every row was read)."""
        return int(self.train_total if self.train_total is not None else self.train_labels.numel())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.train_images.shape[1:]
        return (int(c), int(h), int(w))


def channel_stats(images: Tensor, chunk: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images scaled to [0, 1].

    Args:
        images: uint8 [N, C, H, W].
        chunk: images per step; bounds the float64 temporary to chunk*C*H*W*8 bytes.

    Returns:
        (mean, std), each a tuple of C floats.
    """
    if images.shape[0] == 0:
        raise ValueError("cannot compute channel statistics of an empty image set")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3)).cpu()
        total_sq += part.square().sum(dim=(0, 2, 3)).cpu()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
