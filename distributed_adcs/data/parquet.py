"""Labelled image sets stored as Parquet files (read with pyarrow).

Layout: ``root`` is a directory holding ``train*.parquet`` and ``test*.parquet``: a local
path or any pyarrow filesystem URI (``file://``, ``s3://``, ``gs://``, ``hdfs://``; see
``distributed_adcs.storage``), so that every node of a cluster reads the same files. Files of
one split are read in file-name order (so shard them as ``train-00000-of-00003.parquet``,
...) and their rows concatenated; the row order is the example order (global index).

Only what a job uses is read: with ``limit`` (and ``val_size``) the training files' row
groups that hold neither the first ``limit`` rows nor the last ``val_size`` are skipped, so
write sets in row groups (the exporter does) and a small job reads a small part of a large set.

Columns (names configurable, default ``image`` and ``label``):

* image: either encoded image bytes (PNG/JPEG, ``binary``; or a struct with a ``bytes``
  field, as Hugging Face writes images), decoded with PIL to grey (``L``) or ``RGB``; or
  a fixed-shape uint8 array, stored as a flat list / fixed-size list with the shape in the
  schema metadata, or as a nested list ``[C][H][W]`` (``[H][W]`` means one channel).
* label: any integer type, class ids from 0.

Optional schema metadata (JSON values), read from the first train file:

* ``adcs.image_shape``: ``[C, H, W]``; needed for flat lists, checked otherwise.
* ``adcs.num_classes``: integer; else the largest label + 1.
* ``adcs.mean`` / ``adcs.std``: per-channel lists; else computed from the train split.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from PIL import Image

from distributed_adcs import storage
from distributed_adcs.data.types import DataFiles, RawDataset, channel_stats

META_IMAGE_SHAPE = b"adcs.image_shape"
META_NUM_CLASSES = b"adcs.num_classes"
META_MEAN = b"adcs.mean"
META_STD = b"adcs.std"
META_SOURCE = b"adcs.source"  # informational: the registry name an export came from
META_ENCODING = b"adcs.encoding"  # informational: "png" or "array"

_GREY_MODES = frozenset({"1", "L", "LA"})


def parquet_files(root: str, split: str) -> list[str]:
    """The ``{split}*.parquet`` files in ``root`` (a path or URI), in name order, as paths of
    ``storage.filesystem(root)``."""
    return storage.list_files(root, split, ".parquet")


def _is_list(typ: pa.DataType) -> bool:
    return pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)


def _open_image(blob: bytes, where: str, row: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(blob))
    except (OSError, ValueError, TypeError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{where}: row {row} of the image column is no image PIL can decode "
                         f"({type(err).__name__})") from None


def _decode_encoded(values: pa.Array, where: str) -> np.ndarray:
    blobs = values.to_pylist()
    first = _open_image(blobs[0], where, 0)
    mode = "L" if first.mode in _GREY_MODES else "RGB"
    width, height = first.size
    channels = 1 if mode == "L" else 3
    out = np.empty((len(blobs), height, width, channels), dtype=np.uint8)
    for row, blob in enumerate(blobs):
        image = _open_image(blob, where, row)
        if image.mode != mode:
            image = image.convert(mode)
        pixels = np.asarray(image)
        if pixels.shape[:2] != (height, width):
            raise ValueError(f"{where}: row {row} is {pixels.shape[:2]}, row 0 is {(height, width)}")
        out[row] = pixels.reshape(height, width, channels)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _list_dims(values: pa.Array, where: str) -> tuple[list[int], pa.Array]:
    """Peel list levels: the (uniform) length at each level and the innermost values."""
    dims: list[int] = []
    while _is_list(values.type):
        if values.null_count:
            raise ValueError(f"{where}: image arrays contain nulls")
        lengths = pc.min_max(pc.list_value_length(values))
        low, high = lengths["min"].as_py(), lengths["max"].as_py()
        if low != high:
            raise ValueError(f"{where}: image arrays have differing lengths ({low}..{high}) at depth {len(dims)}")
        dims.append(int(low))
        values = values.flatten()
    return dims, values


def _decode_arrays(values: pa.Array, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    count = len(values)
    dims, inner = _list_dims(values, where)
    if not pa.types.is_integer(inner.type) or inner.null_count:
        raise ValueError(f"{where}: image array values must be non-null integers, got {inner.type}")
    flat = inner.to_numpy(zero_copy_only=False)
    if flat.size and (flat.min() < 0 or flat.max() > 255):
        raise ValueError(f"{where}: image values must lie in 0..255")
    nested = {2: (1, *dims), 3: tuple(dims)}  # list depth per row -> [C, H, W]: [H][W] or [C][H][W]
    if len(dims) == 1:
        if shape is None:
            raise ValueError(f"{where}: flat image arrays need schema metadata {META_IMAGE_SHAPE.decode()}")
        if int(np.prod(shape)) != dims[0]:
            raise ValueError(f"{where}: {dims[0]} values per image do not fit shape {list(shape)}")
    elif len(dims) in nested:
        row_shape = nested[len(dims)]
        if shape is not None and tuple(shape) != row_shape:
            raise ValueError(f"{where}: nested arrays are {list(row_shape)} but metadata says {list(shape)}")
        shape = row_shape
    else:
        raise ValueError(f"{where}: nested image arrays must be [C][H][W] or [H][W], got depth {len(dims)}")
    return flat.astype(np.uint8, copy=False).reshape(count, *shape)


def _image_array(column: pa.ChunkedArray, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    values = column.combine_chunks()
    if values.null_count:
        raise ValueError(f"{where}: image column has nulls")
    typ = values.type
    if pa.types.is_struct(typ) and typ.get_field_index("bytes") >= 0:
        values, typ = values.flatten()[typ.get_field_index("bytes")], typ.field("bytes").type
    if len(values) == 0:
        if shape is None:
            raise ValueError(f"{where}: empty split needs schema metadata {META_IMAGE_SHAPE.decode()}")
        return np.zeros((0, *shape), dtype=np.uint8)
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        images = _decode_encoded(values, where)
        if shape is not None and images.shape[1:] != tuple(shape):
            raise ValueError(f"{where}: decoded images are {list(images.shape[1:])}, metadata says {list(shape)}")
        return images
    if _is_list(typ):
        return _decode_arrays(values, shape, where)
    raise ValueError(f"{where}: unsupported image column type {typ}; use encoded bytes or uint8 arrays")


def _label_array(column: pa.ChunkedArray, where: str) -> np.ndarray:
    if not pa.types.is_integer(column.type) or column.null_count:
        raise ValueError(f"{where}: label column must be non-null integers, got {column.type}")
    return column.to_numpy().astype(np.int64)


def _overlaps(start: int, stop: int, wanted: list[tuple[int, int]] | None) -> bool:
    return wanted is None or any(start < b and a < stop for a, b in wanted)


@dataclass
class _Part:
    """The rows read from one split: images, labels, their positions in the split, its size."""

    images: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor
    total: int


def _footers(fs, files: list[str]) -> list[pq.FileMetaData]:
    """Each file's Parquet footer (schema, row groups), read once (on an object store every
    open is a request)."""
    out = []
    for path in files:
        try:
            with fs.open_input_file(path) as handle:
                out.append(pq.read_metadata(handle))
        except (OSError, pa.ArrowException) as err:  # not Parquet, truncated, unreadable
            raise ValueError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    return out


def _read_split(fs, files: list[str], image_column: str, label_column: str, shape: tuple[int, ...] | None,
                wanted: list[tuple[int, int]] | None = None, footers: list[pq.FileMetaData] | None = None) -> _Part:
    """Read the row groups of ``files`` that overlap ``wanted`` (half-open row ranges of the
    split, all when None); ``footers``: the files' footers when already read."""
    images, labels, positions, offset = [], [], [], 0
    for path, footer in zip(files, footers or [None] * len(files)):
        with fs.open_input_file(path) as handle:
            pf = pq.ParquetFile(handle, metadata=footer)
            names = pf.schema_arrow.names
            absent = [c for c in (image_column, label_column) if c not in names]
            if absent:
                raise ValueError(f"{path}: no column(s) {absent}; columns are {names}")
            groups, starts = [], []
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if n and _overlaps(offset, offset + n, wanted):
                    groups.append(g)
                    starts.append(torch.arange(offset, offset + n, dtype=torch.int64))
                offset += n
            if not groups and pf.metadata.num_row_groups:
                continue
            table = pf.read_row_groups(groups, columns=[image_column, label_column])
        images.append(_image_array(table.column(image_column), shape, path))
        labels.append(_label_array(table.column(label_column), path))
        positions.extend(starts)
    if not images:  # every file empty (or skipped): keep the shape for the empty split
        images.append(_image_array(pa.chunked_array([], pa.binary()), shape, files[0]))
        labels.append(np.zeros(0, dtype=np.int64))
    pos = torch.cat(positions) if positions else torch.zeros(0, dtype=torch.int64)
    return _Part(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), pos, offset)


def _all_labels(fs, files: list[str], label_column: str) -> torch.Tensor:
    """Every label of ``files`` (the label column alone: no image is read)."""
    parts = []
    for path in files:
        with fs.open_input_file(path) as handle:
            parts.append(_label_array(pq.read_table(handle, columns=[label_column]).column(label_column), path))
    return torch.from_numpy(np.concatenate(parts))


@dataclass(frozen=True)
class _Meta:
    """The optional ``adcs.*`` schema metadata of a Parquet set."""

    image_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _metadata(footer: pq.FileMetaData, path: str) -> _Meta:
    raw = footer.schema.to_arrow_schema().metadata or {}

    def value(key: bytes) -> Any:  # parsed JSON: a malformed value raises below
        return json.loads(raw[key]) if key in raw else None

    try:
        shape, classes, mean, std = (value(k) for k in (META_IMAGE_SHAPE, META_NUM_CLASSES, META_MEAN, META_STD))
        return _Meta(
            image_shape=None if shape is None else tuple(int(v) for v in shape),
            num_classes=None if classes is None else int(classes),
            mean=None if mean is None else tuple(float(v) for v in mean),
            std=None if std is None else tuple(float(v) for v in std),
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: malformed adcs.* schema metadata: {error}") from None


def _split_files(root: str | None) -> tuple[pafs.FileSystem, dict[str, list[str]]]:
    """The set's filesystem and its ``train`` / ``test`` files; errors name what is missing."""
    if root is None:
        raise ValueError("the parquet dataset needs data.root: a directory with train*.parquet and test*.parquet")
    fs, _ = storage.filesystem(root)
    files = {split: parquet_files(root, split) for split in ("train", "test")}
    for split, found in files.items():
        if not found:
            pattern = storage.join(root, f"{split}*.parquet")
            raise FileNotFoundError(f"parquet: no {pattern}; set data.root to the directory that holds them")
    return fs, files


def _data_files(root: str | None, files: dict[str, list[str]]) -> DataFiles:
    return DataFiles.of(str(root), files["train"] + files["test"])


def describe_parquet(root: str | None, *, image_column: str, label_column: str) -> tuple[int, int, DataFiles]:
    """``(training rows, classes, files)`` of a Parquet set from its footers alone: no image is
    read (the label column only where the schema metadata has no class count).

    Raises:
        FileNotFoundError, ValueError: as :func:`load_parquet` for the same set.
    """
    fs, files = _split_files(root)
    footers = _footers(fs, files["train"])
    names = footers[0].schema.to_arrow_schema().names
    absent = [c for c in (image_column, label_column) if c not in names]
    if absent:
        raise ValueError(f"{files['train'][0]}: no column(s) {absent}; columns are {names}")
    total = sum(f.num_rows for f in footers)
    if total == 0:
        raise ValueError(f"parquet: the train files in {root} hold no rows")
    classes = _metadata(footers[0], files["train"][0]).num_classes
    if classes is None:
        classes = int(torch.cat([_all_labels(fs, files[s], label_column) for s in ("train", "test")]).max()) + 1
    return total, classes, _data_files(root, files)


def load_parquet(
    root: str | None, download: bool, *, image_column: str, label_column: str, limit: int | None = None,
    val_size: int = 0, test_limit: int | None = None,
) -> RawDataset:
    """Load a Parquet image set laid out as described in this module's docstring.

    Args:
        root: directory (path or URI) with ``train*.parquet`` and ``test*.parquet`` (required).
        download: ignored; Parquet sets are never downloaded.
        image_column, label_column: the columns of the images and of the integer labels
            (``data.params``; their defaults are ``ParquetParams``', specs/datasets.py).
        limit, val_size: the job's split (``split_raw``): when ``limit`` is set, only the
            training row groups holding the first ``limit`` or the last ``val_size`` rows are read.
        test_limit: when set, only the test row groups holding the first ``test_limit`` rows
            are read (0: none; the split then has no rows but keeps the image shape).

    Returns:
        The train and test splits.

    Raises:
        FileNotFoundError: a split has no files.
        ValueError: root unset, or the columns or metadata are malformed.
    """
    fs, files = _split_files(root)
    footers = _footers(fs, files["train"])
    meta = _metadata(footers[0], files["train"][0])
    total = sum(f.num_rows for f in footers)
    wanted = None if limit is None else [(0, limit), (total - val_size, total)]
    train = _read_split(fs, files["train"], image_column, label_column, meta.image_shape, wanted, footers)
    test = _read_split(fs, files["test"], image_column, label_column,  # (an empty one takes train's shape)
                       meta.image_shape or tuple(train.images.shape[1:]), None if test_limit is None else [(0, test_limit)])
    if train.total == 0:
        raise ValueError(f"parquet: the train files in {root} hold no rows")
    num_classes = meta.num_classes
    if num_classes is None:  # of every label: each process infers the same count, whatever rows it reads
        train_labels = train.labels if limit is None else _all_labels(fs, files["train"], label_column)
        test_labels = test.labels if test_limit is None else _all_labels(fs, files["test"], label_column)
        num_classes = int(torch.cat([train_labels, test_labels]).max()) + 1
    if meta.mean is not None and meta.std is not None:
        mean, std = meta.mean, meta.std
    else:  # of the rows read (all of them unless limit skipped some row groups)
        mean, std = channel_stats(train.images)
    whole = train.positions.numel() == train.total
    return RawDataset(train.images, train.labels, test.images, test.labels, num_classes, mean, std,
                      train_positions=None if whole else train.positions, train_total=train.total,
                      files=_data_files(root, files))
