"""Reader for the IDX format of MNIST and Fashion-MNIST, plain or gzipped.

IDX layout (big-endian): two zero bytes, one type code byte, one byte with the number of
dimensions ``d``, then ``d`` uint32 sizes, then the values in C order. The image files are
``[N, 28, 28]`` uint8 (type code 0x08) and the label files ``[N]`` uint8.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# Type codes of the IDX header -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(2)
    opener = gzip.open if head == _GZIP_MAGIC else open
    with opener(path, "rb") as handle:
        return handle.read()


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped or not; detected from the file's first bytes).

    Args:
        path: the file.

    Returns:
        A writable numpy array of the stored shape, in native byte order.

    Raises:
        ValueError: the header is malformed or the payload size does not match it.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (header {raw[:4]!r})")
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise ValueError(f"{path}: header promises {shape} ({expected} bytes), payload has {len(raw) - header_end}")
    values = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)


def find_idx(directory: str | Path, stem: str) -> Path | None:
    """The IDX file ``stem`` or ``stem.gz`` in ``directory``, preferring the plain one.

    Args:
        directory: where to look.
        stem: file name without ``.gz``, e.g. ``train-images-idx3-ubyte``.

    Returns:
        The path, or None when neither exists.
    """
    for name in (stem, f"{stem}.gz"):
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    return None
