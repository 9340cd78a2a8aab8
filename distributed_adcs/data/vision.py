"""Loaders for the torchvision image sets, reading their documented on-disk formats.

torchvision is used to *download* (``download=True``) and for the file names of each
layout; the files are then read here directly. torchvision's own CIFAR and SVHN classes
check the md5 of the full-size files, which would reject small files in the same format
(and re-hash 160 MB on every load), so reading the format ourselves keeps both working.

On-disk layouts under ``root`` (default ``./data``):

* ``mnist``: ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (or the four
  files directly in ``root``).
* ``fashion_mnist``: the same names, in :data:`FASHION_MNIST_SYSTEM_DIR` when ``root`` is
  unset and Debian's ``dataset-fashion-mnist`` is installed, else ``FashionMNIST/raw``.
* ``cifar10``: ``cifar-10-batches-py/data_batch_{1..5}`` and ``test_batch``, Python pickles
  with ``data`` uint8 [N, 3072] (1024 red, 1024 green, 1024 blue values, each row-major
  32x32) and ``labels``.
* ``cifar100``: ``cifar-100-python/{train,test}``, same but ``fine_labels`` (100 classes).
* ``svhn``: ``{train,test}_32x32.mat`` with ``X`` uint8 [32, 32, 3, N] and ``y`` [N, 1] in
  1..10, where 10 stands for the digit 0.

Per-dataset mean/std (:data:`DATASET_STATS`) are the per-channel statistics of each
training split's pixels scaled to [0, 1]; the model normalises its input with them.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from pathlib import Path

import numpy as np
import torch

from distributed_adcs import storage
from distributed_adcs.data.idx import find_idx, read_idx
from distributed_adcs.data.types import DataFiles, RawDataset

DEFAULT_ROOT = "./data"
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"  # Debian: dataset-fashion-mnist

# Per-channel (mean, std) of the training split's [0, 1] pixels.
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}

_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def missing_files_error(name: str, paths: Sequence[Path | str]) -> FileNotFoundError:
    """The error for absent dataset files, naming them and the two ways out."""
    listed = ", ".join(str(p) for p in paths)
    return FileNotFoundError(
        f"{name}: dataset files not found: {listed}. Set data.download=true to download them, "
        f"or data.root to the directory that holds them."
    )


def _base(name: str, root: str | None) -> Path:
    """The local directory of ``data.root`` (``./data`` when unset); a remote URI is refused."""
    if root is None:
        return Path(DEFAULT_ROOT)
    if not storage.is_local(root):
        raise ValueError(f"{name}: data.root={root} is a remote URI, but torchvision sets are read from a local "
                         f"directory: put the files on every node, or export the set to Parquet once "
                         f"(adcs data export --dataset {name} --out ...), copy that to {root} and use "
                         f"data.name=parquet")
    return storage.local_path(root)


@contextmanager
def download_lock(base: Path) -> Iterator[None]:
    """One download into ``base`` at a time: every rank of a job may ask for the files, and
    the ranks of one node (or of nodes sharing ``base``) would otherwise write the same files
    at once. Whoever waited checks again for the files before downloading."""
    from filelock import FileLock

    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / ".adcs-download.lock")):
        yield


def _idx_dir_complete(directory: Path) -> bool:
    return all(find_idx(directory, stem) is not None for pair in _IDX_STEMS.values() for stem in pair)


def _read_idx_split(directory: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_stem, label_stem = _IDX_STEMS[split]
    images = read_idx(find_idx(directory, image_stem))  # type: ignore[arg-type]
    labels = read_idx(find_idx(directory, label_stem))  # type: ignore[arg-type]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{directory}/{image_stem}: expected uint8 [N, H, W], got {images.dtype} {images.shape}")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64).reshape(-1))


def _tv():
    """torchvision's datasets, imported when a file is fetched or a torchvision format read:
    the import costs every process that loads data (each Ray worker) about a second."""
    from torchvision import datasets

    return datasets


def _load_mnist_family(
    name: str, source: str | type, root: str | None, download: bool, system_dir: str | None = None
) -> RawDataset:
    """``source``: the torchvision dataset class that downloads the files, or its name (the class
    is then imported only if a download is needed)."""
    base = _base(name, root)
    tv_name = source if isinstance(source, str) else source.__name__
    torchvision_dir = base / tv_name / "raw"
    candidates = [torchvision_dir, base]
    if root is None and system_dir is not None:
        candidates.insert(0, Path(system_dir))
    found = next((d for d in candidates if _idx_dir_complete(d)), None)
    if found is None and download:
        with download_lock(base):
            if not _idx_dir_complete(torchvision_dir):  # another rank may have fetched them meanwhile
                fetch = getattr(_tv(), source) if isinstance(source, str) else source
                fetch(str(base), train=True, download=True)  # fetches all four files
        found = torchvision_dir if _idx_dir_complete(torchvision_dir) else None
    if found is None:
        raise missing_files_error(name, [d / _IDX_STEMS["train"][0] for d in candidates])
    train_images, train_labels = _read_idx_split(found, "train")
    test_images, test_labels = _read_idx_split(found, "test")
    mean, std = DATASET_STATS[name]
    files = [str(find_idx(found, stem)) for pair in _IDX_STEMS.values() for stem in pair]
    return RawDataset(train_images, train_labels, test_images, test_labels, 10, mean, std,
                      files=DataFiles.of(str(found), files))


def load_fashion_mnist(root: str | None, download: bool, **_opts: object) -> RawDataset:
    """Fashion-MNIST: 60k/10k grey 28x28 images of 10 clothing classes.

    Args:
        root: directory with the IDX files (flat or ``FashionMNIST/raw``); when None,
            :data:`FASHION_MNIST_SYSTEM_DIR` if it holds them, else ``./data``.
        download: let torchvision fetch the files when they are missing.

    Returns:
        The source train and test splits.
    """
    return _load_mnist_family("fashion_mnist", "FashionMNIST", root, download, FASHION_MNIST_SYSTEM_DIR)


def load_mnist(root: str | None, download: bool, **_opts: object) -> RawDataset:
    """MNIST: 60k/10k grey 28x28 handwritten digits.

    Args:
        root: directory with ``MNIST/raw`` (or the flat IDX files); ``./data`` when None.
        download: let torchvision fetch the files when they are missing.

    Returns:
        The source train and test splits.
    """
    return _load_mnist_family("mnist", "MNIST", root, download)


def _read_cifar_file(path: Path, label_key: str) -> tuple[np.ndarray, list[int]]:
    # The CIFAR python release is a pickle; like torchvision, trust the files under root.
    with open(path, "rb") as handle:
        entry = pickle.load(handle, encoding="latin1")
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # channel-major rows
    return data, list(entry[label_key])


def _read_cifar_split(folder: Path, names: Sequence[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_read_cifar_file(folder / name, label_key) for name in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.asarray([label for p in parts for label in p[1]], dtype=np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _load_cifar(
    name: str, tv_class: type[Any], label_key: str, num_classes: int, root: str | None, download: bool
) -> RawDataset:
    base = _base(name, root)
    folder = base / tv_class.base_folder
    train_names = [n for n, _md5 in tv_class.train_list]
    test_names = [n for n, _md5 in tv_class.test_list]
    missing = [folder / n for n in train_names + test_names if not (folder / n).is_file()]
    if missing and download:
        with download_lock(base):
            if any(not p.is_file() for p in missing):  # another rank may have fetched them meanwhile
                tv_class(str(base), train=True, download=True)  # fetches and unpacks the whole archive
        missing = [p for p in missing if not p.is_file()]
    if missing:
        raise missing_files_error(name, missing)
    train_images, train_labels = _read_cifar_split(folder, train_names, label_key)
    test_images, test_labels = _read_cifar_split(folder, test_names, label_key)
    mean, std = DATASET_STATS[name]
    return RawDataset(train_images, train_labels, test_images, test_labels, num_classes, mean, std,
                      files=DataFiles.of(str(folder), [str(folder / n) for n in train_names + test_names]))


def load_cifar10(root: str | None, download: bool, **_opts: object) -> RawDataset:
    """CIFAR-10: 50k/10k RGB 32x32 images of 10 classes.

    Args:
        root: directory holding ``cifar-10-batches-py``; ``./data`` when None.
        download: let torchvision fetch and unpack the archive when files are missing.

    Returns:
        The source train and test splits.
    """
    return _load_cifar("cifar10", _tv().CIFAR10, "labels", 10, root, download)


def load_cifar100(root: str | None, download: bool, **_opts: object) -> RawDataset:
    """CIFAR-100: 50k/10k RGB 32x32 images of 100 (fine) classes.

    Args:
        root: directory holding ``cifar-100-python``; ``./data`` when None.
        download: let torchvision fetch and unpack the archive when files are missing.

    Returns:
        The source train and test splits.
    """
    return _load_cifar("cifar100", _tv().CIFAR100, "fine_labels", 100, root, download)


def _read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.io import loadmat  # scipy is only needed for SVHN

    mat = loadmat(str(path))
    images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))  # HWCN -> NCHW
    labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    labels[labels == 10] = 0  # the release labels the digit 0 as 10
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_svhn(root: str | None, download: bool, **_opts: object) -> RawDataset:
    """SVHN (cropped digits): 73,257/26,032 RGB 32x32 house-number digits, labels 0..9.

    Args:
        root: directory holding ``train_32x32.mat`` and ``test_32x32.mat``; ``./data`` when None.
        download: let torchvision fetch missing files.

    Returns:
        The source train and test splits (the ``extra`` split is not used).
    """
    base = _base("svhn", root)
    paths = {split: base / _tv().SVHN.split_list[split][1] for split in ("train", "test")}
    for split, path in paths.items():
        if download and not path.is_file():
            with download_lock(base):
                if not path.is_file():  # another rank may have fetched it meanwhile
                    _tv().SVHN(str(base), split=split, download=True)
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        raise missing_files_error("svhn", missing)
    train_images, train_labels = _read_svhn_mat(paths["train"])
    test_images, test_labels = _read_svhn_mat(paths["test"])
    mean, std = DATASET_STATS["svhn"]
    return RawDataset(train_images, train_labels, test_images, test_labels, 10, mean, std,
                      files=DataFiles.of(str(base), [str(p) for p in paths.values()]))
