"""Data layer: image sets as uint8 tensors, dataset loaders, splits, batches, augmentation.

Typical use::

    splits = load_splits("fashion_mnist", limit=5000)
    for batch in iterate_batches(splits.train, 128, shuffle=True, generator=gen):
        loss = model(batch.x)  # float [0, 1] NCHW; normalisation lives in the model

Datasets are registered in :data:`DATASETS`; see :mod:`.vision` for the on-disk layouts of
the torchvision sets and :mod:`.parquet` for the Parquet layout.
"""

from distributed_adcs.data.augment import AUGMENTATIONS, default_augmentation, get_augmentation
from distributed_adcs.data.batches import Batch, iterate_batches, num_batches
from distributed_adcs.data.export import export_parquet
from distributed_adcs.data.splits import DATASETS, describe_splits, load_splits, split_raw
from distributed_adcs.data.types import DataSummary, ImageSet, RawDataset, Splits
from distributed_adcs.data.vision import DATASET_STATS, FASHION_MNIST_SYSTEM_DIR

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DATASET_STATS",
    "FASHION_MNIST_SYSTEM_DIR",
    "Batch",
    "DataSummary",
    "ImageSet",
    "RawDataset",
    "Splits",
    "default_augmentation",
    "describe_splits",
    "export_parquet",
    "get_augmentation",
    "iterate_batches",
    "load_splits",
    "num_batches",
    "split_raw",
]
