"""Paths that may be URIs: a local path, ``file://``, or any filesystem pyarrow knows
(``s3://``, ``gs://``, ``hdfs://``, ``abfs://``), for data roots and job output.

A plain path is the local filesystem (relative paths resolve against the working directory,
as the user typed them); anything with a ``scheme://`` goes through ``pyarrow.fs``, so a
cluster whose nodes share no disk reads its data and writes its checkpoints to one place.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(location: str | os.PathLike) -> bool:
    """``scheme://...`` (a ``file://`` URI included); a plain path is not."""
    return bool(_SCHEME.match(str(location)))


def is_local(location: str | os.PathLike) -> bool:
    """A path on this machine's filesystem: a plain path or a ``file://`` URI."""
    return not is_uri(location) or str(location).startswith("file://")


def local_path(location: str | os.PathLike) -> Path:
    """The local path of a plain path or ``file://`` URI (absolute)."""
    text = str(location)
    if not is_local(text):
        raise ValueError(f"{text} is not on the local filesystem")
    return Path(text.removeprefix("file://")).expanduser().resolve()


def filesystem(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` for a path or URI.

    Raises:
        ValueError: a URI whose scheme pyarrow cannot open (the message names it).
    """
    if is_local(location):
        return pafs.LocalFileSystem(), local_path(location).as_posix()
    try:
        return pafs.FileSystem.from_uri(str(location))
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"cannot open {location}: {err}") from None


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/...`` for a path or URI (a local path stays a path, made absolute)."""
    if not is_uri(base):
        return str(Path(base).expanduser().resolve().joinpath(*parts))
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def list_files(location: str | os.PathLike, prefix: str = "", suffix: str = "") -> list[str]:
    """The files directly in ``location`` named ``prefix*suffix``, in name order, as paths of
    its filesystem (see :func:`filesystem`); empty when the directory does not exist."""
    fs, root = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=False))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.startswith(prefix)
                  and i.base_name.endswith(suffix))


def list_dirs(location: str | os.PathLike) -> list[str]:
    """The names of the directories directly in ``location``, in order; empty when it does not exist."""
    fs, root = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def delete_dir(location: str | os.PathLike) -> None:
    """Delete the directory ``location`` and everything in it."""
    fs, path = filesystem(location)
    fs.delete_dir(path)


def exists(location: str | os.PathLike) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def upload(local: Path, location: str) -> None:
    """Copy the local file ``local`` to ``location`` (written to a temporary name, then moved
    where the filesystem can move, so a reader never sees half a file)."""
    fs, path = filesystem(location)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{path}.tmp"
    with open(local, "rb") as src, fs.open_output_stream(tmp) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    try:
        fs.move(tmp, path)
    except (OSError, NotImplementedError):  # object stores without rename: write in place
        with open(local, "rb") as src, fs.open_output_stream(path) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        fs.delete_file(tmp)


def download(location: str, local: Path) -> Path:
    """Copy the file at ``location`` to the local path ``local``; return ``local``."""
    fs, path = filesystem(location)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + ".part")
    with fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, local)
    return local


def check_writable(location: str | os.PathLike) -> None:
    """Create ``location`` (a directory) if need be and prove it takes a file.

    Raises:
        ValueError: one line naming the location and why it cannot be written.
    """
    text = str(location)
    try:
        if is_local(text):
            path = local_path(text)
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".adcs-write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        else:
            fs, where = filesystem(text)
            fs.create_dir(where, recursive=True)
    except (OSError, pa.ArrowException) as err:
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise ValueError(f"cannot write to {text} ({reason})") from None
