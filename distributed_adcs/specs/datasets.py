"""The dataset registry: every fact about a dataset, stated once.

A new dataset is one module plus one entry in ``DATASETS``. The module provides a loader
``fn(root, download, *, limit, val_size, test_limit, **params) -> RawDataset``
(``distributed_adcs.data.types``): the source training and test splits as uint8 NCHW tensors
with int64 labels, the class count, the per-channel mean/std of the [0, 1] training pixels, and
the files it read (``DataFiles.of``: what the run's dataset input and its digest are made of).
Its keyword arguments are the fields of the entry's ``params``; ``limit``, ``val_size`` and
``test_limit`` say which rows the job will use, so a loader that can read part of a set reads
only those (``data/parquet.py``), and any other ignores them. It raises ``FileNotFoundError``
for absent files and ``ValueError`` for malformed ones, naming them.

Fields of :class:`DatasetSpec`:

- ``loader``: ``"module:attribute"`` of the loader.
- ``image_shape``: ``(C, H, W)`` of every image, or ``None`` when only the files say (Parquet).
  The config bounds l2 radii with it before any file is read; ``load_splits`` checks that the
  loader's images have it.
- ``augment``: what ``data.augment: auto`` trains with, a key of ``data.augment.AUGMENTATIONS``
  (crop and flip for natural images; none for digits, where a flip changes the digit, and for
  the small centred Fashion-MNIST images).
- ``describe``: ``"module:attribute"`` of ``fn(root, **params) -> (training rows, classes, files)``
  that reads no image (a cluster's driver describes a shared Parquet set from its footers);
  ``None``: the set is loaded and counted.
- ``params``: the dataclass of the dataset's own parameters (``data.params``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import check
from . import NoParams, lookup, resolve


@dataclass(frozen=True, kw_only=True, slots=True)
class ParquetParams:
    image_column: str = "image"  # encoded images (PNG/JPEG bytes) or raw uint8 arrays
    label_column: str = "label"  # integer class labels, 0..classes-1

    def __post_init__(self) -> None:
        check(bool(self.image_column), "image_column", "must not be empty")
        check(bool(self.label_column), "label_column", "must not be empty")


@dataclass(frozen=True, kw_only=True, slots=True)
class DatasetSpec:
    name: str
    summary: str  # one line for docs
    loader: str  # "module:attribute" of the loader
    image_shape: tuple[int, int, int] | None  # (C, H, W); None: only the files say
    augment: str = "none"  # what data.augment: auto trains with
    describe: str | None = None  # "module:attribute" of a describer that reads no image
    params: type = NoParams

    @property
    def input_size(self) -> int | None:
        """C*H*W: the l2 distance between a black and a white image is its square root."""
        return None if self.image_shape is None else math.prod(self.image_shape)

    def loader_fn(self) -> Callable[..., Any]:
        return resolve(self.loader)

    def describe_fn(self) -> Callable[..., Any] | None:
        return None if self.describe is None else resolve(self.describe)


_VISION = "distributed_adcs.data.vision"
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec(name="fashion_mnist", summary="Fashion-MNIST: 60k/10k grey 28x28 clothing images, 10 classes",
                loader=f"{_VISION}:load_fashion_mnist", image_shape=(1, 28, 28)),
    DatasetSpec(name="mnist", summary="MNIST: 60k/10k grey 28x28 handwritten digits",
                loader=f"{_VISION}:load_mnist", image_shape=(1, 28, 28)),
    DatasetSpec(name="cifar10", summary="CIFAR-10: 50k/10k RGB 32x32 images, 10 classes",
                loader=f"{_VISION}:load_cifar10", image_shape=(3, 32, 32), augment="crop_flip"),
    DatasetSpec(name="cifar100", summary="CIFAR-100: 50k/10k RGB 32x32 images, 100 classes",
                loader=f"{_VISION}:load_cifar100", image_shape=(3, 32, 32), augment="crop_flip"),
    DatasetSpec(name="svhn", summary="SVHN cropped digits: 73k/26k RGB 32x32 house numbers",
                loader=f"{_VISION}:load_svhn", image_shape=(3, 32, 32)),
    DatasetSpec(name="parquet", summary="any image set in Parquet files (train*.parquet, test*.parquet) under data.root",
                loader="distributed_adcs.data.parquet:load_parquet", image_shape=None,
                describe="distributed_adcs.data.parquet:describe_parquet", params=ParquetParams),
)}


def get_dataset(name: object) -> DatasetSpec:
    """The spec of ``name``; ``ConfigError`` (a ``ValueError``) naming the valid ones otherwise."""
    return lookup(DATASETS, name, "data.name")
