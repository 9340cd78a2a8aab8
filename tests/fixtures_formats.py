"""Write tiny image sets in the datasets' real on-disk formats, for loader tests.

Each writer follows the format's published description, building the bytes explicitly
(not by inverting the loader's reshapes), so a layout mistake in the loader shows up as
a pixel mismatch.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def random_images(seed: int, count: int, channels: int, height: int, width: int) -> np.ndarray:
    """uint8 [count, C, H, W] noise; image 0 is pure first-channel (pure red when RGB)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, channels, height, width), dtype=np.uint8)
    if count:
        images[0] = 0
        images[0, 0] = 255
    return images


def random_labels(seed: int, count: int, num_classes: int) -> np.ndarray:
    """int64 [count] labels that use class 0 and class num_classes - 1 at least once."""
    labels = np.random.default_rng(seed).integers(0, num_classes, size=count).astype(np.int64)
    labels[:2] = [0, num_classes - 1][:count]
    return labels


def write_idx(path: Path, values: np.ndarray, gz: bool = False) -> Path:
    """IDX file: 0, 0, type 0x08 (uint8), ndim, big-endian uint32 sizes, then the bytes."""
    header = bytes([0, 0, 0x08, values.ndim]) + b"".join(struct.pack(">I", size) for size in values.shape)
    payload = header + np.ascontiguousarray(values, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_mnist_dir(directory: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                    gz: bool = False) -> None:
    """The four MNIST-style IDX files; images given as uint8 [N, 1, H, W]."""
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images[:, 0], gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), gz)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    # Documented row: 1024 red values, then 1024 green, then 1024 blue, each 32x32 row-major.
    return np.stack([np.concatenate([img[0].ravel(), img[1].ravel(), img[2].ravel()]) for img in images])


def _pickle(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def write_cifar10(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    """``root/cifar-10-batches-py`` with the train split spread over data_batch_1..5."""
    folder = root / "cifar-10-batches-py"
    train_images, train_labels = train
    for number, part in enumerate(np.array_split(np.arange(len(train_labels)), 5), start=1):
        _pickle(folder / f"data_batch_{number}", {
            "batch_label": f"training batch {number} of 5",
            "labels": [int(v) for v in train_labels[part]],
            "data": _cifar_rows(train_images[part]),
            "filenames": [f"img_{i}.png" for i in part],
        })
    _pickle(folder / "test_batch", {
        "batch_label": "testing batch 1 of 1",
        "labels": [int(v) for v in test[1]],
        "data": _cifar_rows(test[0]),
        "filenames": [f"test_{i}.png" for i in range(len(test[1]))],
    })
    _pickle(folder / "batches.meta", {"label_names": [f"class_{i}" for i in range(10)], "num_vis": 3072})
    return folder


def write_cifar100(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` with fine and coarse labels."""
    folder = root / "cifar-100-python"
    for name, (images, labels) in (("train", train), ("test", test)):
        _pickle(folder / name, {
            "filenames": [f"{name}_{i}.png" for i in range(len(labels))],
            "fine_labels": [int(v) for v in labels],
            "coarse_labels": [int(v) // 5 for v in labels],
            "data": _cifar_rows(images),
        })
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                              "coarse_label_names": [f"c{i}" for i in range(20)]})
    return folder


def write_svhn(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
    """``root/{train,test}_32x32.mat``: X uint8 [32, 32, 3, N] (HWC per image), y [N, 1], 0 stored as 10."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in (("train", train), ("test", test)):
        x = np.zeros((images.shape[2], images.shape[3], 3, len(labels)), dtype=np.uint8)
        for n, img in enumerate(images):
            for c in range(3):
                x[:, :, c, n] = img[c]
        y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        savemat(str(root / f"{name}_32x32.mat"), {"X": x, "y": y})
