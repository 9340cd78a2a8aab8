"""Export any registered dataset to the Parquet layout that the ``parquet`` loader reads."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image
from torch import Tensor

from distributed_adcs import storage
from distributed_adcs.data.parquet import (
    META_ENCODING,
    META_IMAGE_SHAPE,
    META_MEAN,
    META_NUM_CLASSES,
    META_SOURCE,
    META_STD,
    parquet_files,
)
from distributed_adcs.data.splits import load_raw
from distributed_adcs.data.types import RawDataset


def _png_column(images: np.ndarray) -> pa.Array:
    if images.shape[1] not in (1, 3):
        raise ValueError(f"png encoding needs 1 or 3 channels, got {images.shape[1]}; use encoding='array'")
    blobs = []
    for image in images:
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)  # PIL wants HW or HWC
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    return pa.array(blobs, type=pa.binary())


def _array_column(images: np.ndarray) -> pa.Array:
    per_image = int(np.prod(images.shape[1:]))
    flat = pa.array(np.ascontiguousarray(images).reshape(-1), type=pa.uint8())
    return pa.FixedSizeListArray.from_arrays(flat, per_image)


# encoding name -> uint8 [N, C, H, W] numpy -> Arrow image column
ENCODERS: dict[str, Callable[[np.ndarray], pa.Array]] = {"png": _png_column, "array": _array_column}


def _schema_metadata(name: str, raw: RawDataset, encoding: str) -> dict[bytes, bytes]:
    values = {
        META_IMAGE_SHAPE: list(raw.image_shape),
        META_NUM_CLASSES: raw.num_classes,
        META_MEAN: list(raw.mean),
        META_STD: list(raw.std),
        META_SOURCE: name,
        META_ENCODING: encoding,
    }
    return {key: json.dumps(value).encode() for key, value in values.items()}


ROW_GROUP = 2048  # rows per Parquet row group: the unit a job with data.limit reads


def _write_split(
    fs: pafs.FileSystem, out: str, split: str, images: Tensor, labels: Tensor, encode: Callable[[np.ndarray], pa.Array],
    metadata: dict[bytes, bytes], rows_per_file: int,
) -> list[str]:
    count = int(images.shape[0])
    shards = max(1, math.ceil(count / rows_per_file))
    images_np, labels_np = images.cpu().numpy(), labels.cpu().numpy().astype(np.int64)
    paths = []
    for shard in range(shards):
        rows = slice(shard * rows_per_file, min(count, (shard + 1) * rows_per_file))
        image_column = encode(images_np[rows])
        schema = pa.schema([("image", image_column.type), ("label", pa.int64())], metadata=metadata)
        table = pa.Table.from_arrays([image_column, pa.array(labels_np[rows], type=pa.int64())], schema=schema)
        path = f"{out}/{split}-{shard:05d}-of-{shards:05d}.parquet"  # zero-padded: name order = row order
        pq.write_table(table, path, row_group_size=ROW_GROUP, filesystem=fs)  # data.limit reads only its groups
        paths.append(path)
    return paths


def export_parquet(
    name: str,
    out_dir: str | os.PathLike,
    *,
    root: str | None = None,
    download: bool = False,
    encoding: str = "png",
    rows_per_file: int = 50_000,
    overwrite: bool = False,
) -> list[str]:
    """Write a registered dataset's full source train and test splits as Parquet.

    ``load_splits("parquet", root=out_dir)`` then yields the same images and labels, class
    count and mean/std (all stored in the schema metadata), with columns ``image`` and
    ``label``.

    Args:
        name: a registered dataset name.
        out_dir: output directory, created if needed: a path or a pyarrow filesystem URI
            (``s3://bucket/fmnist``, ``gs://...``, ``file://...``; see ``distributed_adcs.storage``).
        root: the source dataset's root (None: its default location).
        download: let torchvision download the source files.
        encoding: "png" (lossless bytes; 1 or 3 channels) or "array" (fixed-size uint8 list).
        rows_per_file: maximum rows per file; splits are sharded ``train-00000-of-00002``...
        overwrite: delete existing ``train*.parquet`` / ``test*.parquet`` in ``out_dir``
            first; otherwise their presence is an error (stale shards would be read too).

    Returns:
        The written files, train before test: absolute paths for a local ``out_dir``, URIs
        (``s3://bucket/fmnist/train-00000-of-00002.parquet``) for a remote one.

    Raises:
        ValueError: unknown name or encoding, or rows_per_file < 1.
        FileExistsError: ``out_dir`` already holds split files and ``overwrite`` is false.
    """
    if encoding not in ENCODERS:
        raise ValueError(f"unknown encoding {encoding!r}; valid: {', '.join(sorted(ENCODERS))}")
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
    fs, out = storage.filesystem(out_dir)
    existing = parquet_files(str(out_dir), "train") + parquet_files(str(out_dir), "test")
    if existing and not overwrite:
        names = [p.rsplit("/", 1)[-1] for p in existing]
        raise FileExistsError(f"{out_dir} already holds {names}; pass overwrite=True to replace them")
    raw = load_raw(name, root, download)
    fs.create_dir(out, recursive=True)
    for path in existing:
        fs.delete_file(path)
    metadata = _schema_metadata(name, raw, encoding)
    encode = ENCODERS[encoding]
    written = _write_split(fs, out, "train", raw.train_images, raw.train_labels, encode, metadata, rows_per_file)
    written += _write_split(fs, out, "test", raw.test_images, raw.test_labels, encode, metadata, rows_per_file)
    if storage.is_local(out_dir):
        return written
    scheme = str(out_dir).split("://", 1)[0]
    return [f"{scheme}://{path}" for path in written]
