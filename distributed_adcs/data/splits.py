"""The train / validation / test split every job uses, of a registered dataset.

The registry (``DATASETS``, one :class:`~distributed_adcs.specs.datasets.DatasetSpec` per name,
and what a new entry must provide) lives in ``distributed_adcs/specs/datasets.py``, where the
config reads it without importing torch.
"""

from __future__ import annotations

import torch

from distributed_adcs.data.types import DataSummary, ImageSet, RawDataset, Splits
from distributed_adcs.specs import checked_params
from distributed_adcs.specs.datasets import DATASETS, get_dataset

__all__ = ["DATASETS", "describe_splits", "load_raw", "load_splits", "split_raw"]


def load_raw(name: str, root: str | None, download: bool, *, limit: int | None = None, val_size: int = 0,
             test_limit: int | None = None, **params: object) -> RawDataset:
    """The source splits of a registered dataset, as its loader reads them (``limit``, ``val_size``
    and ``test_limit``: the rows the caller will use; None: all of them).

    Raises:
        ValueError: unknown name or parameter, or images of another shape than the registry
            entry's (the message lists the valid names).
    """
    spec = get_dataset(name)
    kwargs = checked_params(DATASETS, name, "data", params)
    raw = spec.loader_fn()(root, download, limit=limit, val_size=val_size, test_limit=test_limit, **kwargs)
    if spec.image_shape is not None and tuple(raw.image_shape) != spec.image_shape:
        raise ValueError(f"{name}: the loader read images of shape {tuple(raw.image_shape)}, but its registry "
                         f"entry declares {spec.image_shape}")
    return raw


def _part(images: torch.Tensor, labels: torch.Tensor, start: int, stop: int) -> ImageSet:
    # Copies, not views: a view keeps (and pickles, e.g. when Ray ships it to a worker) the
    # whole source storage, which for a small `limit` is far more than the part itself.
    whole = (start, stop) == (0, int(images.shape[0]))
    part_images = images if whole else images[start:stop].clone()
    part_labels = labels if whole else labels[start:stop].clone()
    return ImageSet(part_images, part_labels, torch.arange(start, stop, dtype=torch.int64))


def _rows(raw: RawDataset, start: int, stop: int) -> ImageSet:
    """Source training rows ``[start, stop)``, from a loader that read all or part of them."""
    if raw.train_positions is None:
        return _part(raw.train_images, raw.train_labels, start, stop)
    pos = raw.train_positions
    lo, hi = int(torch.searchsorted(pos, start)), int(torch.searchsorted(pos, stop))
    if hi - lo != stop - start:
        raise ValueError(f"the loader read {hi - lo} of training rows [{start}, {stop})")
    return ImageSet(raw.train_images[lo:hi].clone(), raw.train_labels[lo:hi].clone(), pos[lo:hi].clone())


def _check_counts(limit: int | None, val_size: int, test_limit: int | None) -> None:
    if (limit is not None and limit < 1) or val_size < 0 or (test_limit is not None and test_limit < 0):
        raise ValueError(f"limit must be >= 1 or None, val_size >= 0 and test_limit >= 0 or None, got limit={limit}, "
                         f"val_size={val_size}, test_limit={test_limit}")


def _train_count(name: str, total: int, limit: int | None, val_size: int) -> int:
    """The training examples of a split of ``total`` source rows; ValueError when it cannot be made."""
    if val_size < 0 or val_size >= total:
        raise ValueError(f"val_size={val_size} must be in [0, {total - 1}] for {name}'s {total} training examples")
    available = total - val_size
    if limit is not None and not 1 <= limit <= available:
        raise ValueError(
            f"limit={limit} must be in [1, {available}]: {name} has {total} training examples, {val_size} held out"
        )
    return available if limit is None else limit


def split_raw(name: str, raw: RawDataset, *, limit: int | None = None, val_size: int = 1000,
              test_limit: int | None = None) -> Splits:
    """Cut a loaded dataset into train / validation / test.

    The last ``val_size`` examples of the source training split are the validation set
    whatever ``limit`` is, so runs with different limits validate on the same examples;
    ``train`` is the first ``limit`` of the remaining ones.

    Args:
        name: dataset name, carried into the result.
        raw: the loader's output.
        limit: number of training examples, all remaining when None.
        val_size: examples held out from the end of the source training split (>= 0).
        test_limit: the first ``test_limit`` test examples (all when None; 0: none).

    Returns:
        The splits; every ImageSet's ``indices`` are positions in its source split.

    Raises:
        ValueError: ``val_size`` leaves no training example, or ``limit`` is < 1 or more
            than what remains.
    """
    total = raw.num_train
    keep = _train_count(name, total, limit, val_size)
    available = total - val_size
    tests = int(raw.test_images.shape[0]) if test_limit is None else min(test_limit, int(raw.test_images.shape[0]))
    return Splits(
        name=name,
        train=_rows(raw, 0, keep),
        val=_rows(raw, available, total),
        test=_part(raw.test_images, raw.test_labels, 0, tests),
        num_classes=raw.num_classes,
        mean=tuple(raw.mean),
        std=tuple(raw.std),
        image_shape=raw.image_shape,
        files=raw.files,
    )


def load_splits(
    name: str,
    *,
    root: str | None = None,
    download: bool = False,
    limit: int | None = None,
    val_size: int = 1000,
    test_limit: int | None = None,
    **params: object,
) -> Splits:
    """Load a registered dataset and split it (see :func:`split_raw`).

    Args:
        name: a key of :data:`DATASETS`.
        root: where the files are; None for the dataset's default location.
        download: let torchvision download missing files.
        limit: number of training examples, all when None.
        val_size: examples held out from the end of the source training split.
        test_limit: the first ``test_limit`` test examples (all when None; 0: none, for a
            process that never evaluates); parquet reads only their row groups.
        **params: the dataset's own parameters (parquet: ``image_column``, ``label_column``),
            checked by its registry entry's params class; absent ones take its defaults.

    Returns:
        The train / validation / test splits with class count, mean/std and image shape.

    Raises:
        ValueError: unknown name, parameter or bad ``limit`` / ``val_size``, or images of
            another shape than the registry entry's.
        FileNotFoundError: files missing and ``download`` false.
    """
    get_dataset(name)  # an unknown name first, then bad counts, before reading any file
    _check_counts(limit, val_size, test_limit)
    # a loader that can read part of a set (parquet) reads only these rows; the others ignore them
    raw = load_raw(name, root, download, limit=limit, val_size=val_size, test_limit=test_limit, **params)
    return split_raw(name, raw, limit=limit, val_size=val_size, test_limit=test_limit)


def describe_splits(
    name: str,
    *,
    root: str | None = None,
    download: bool = False,
    limit: int | None = None,
    val_size: int = 1000,
    **params: object,
) -> DataSummary:
    """The training count and class count :func:`load_splits` would give, with the same errors,
    for a process that needs no image: a set whose registry entry has a ``describe`` (Parquet,
    the one a cluster shares) is described from its footers without reading a row group; the
    other sets are loaded (local and small).
    """
    describe = get_dataset(name).describe_fn()
    if describe is None:
        splits = load_splits(name, root=root, download=download, limit=limit, val_size=val_size, test_limit=0,
                             **params)
        return DataSummary(name, splits.num_train, splits.num_classes, splits.files)
    kwargs = checked_params(DATASETS, name, "data", params)
    _check_counts(limit, val_size, None)
    total, classes, files = describe(root, **kwargs)
    return DataSummary(name, _train_count(name, total, limit, val_size), classes, files)
