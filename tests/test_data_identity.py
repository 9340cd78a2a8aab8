"""What a run's provenance is made of, without a run: a data set's files and their digest, and
the git tags of the code (tests/test_provenance.py checks that both reach MLflow runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distributed_adcs.data import describe_splits, load_splits
from distributed_adcs.tracking.provenance import dataset_input, source_tags

from helpers import ROOT


def _write_version(root: Path, seed: int) -> None:
    """A tiny Parquet set (flat uint8 arrays, 8 train and 4 test rows): each seed another version
    of the same shape, so its files have the same names and sizes."""
    rng = np.random.default_rng(seed)
    meta = {b"adcs.image_shape": b"[1, 4, 4]", b"adcs.num_classes": b"2"}
    for split, n in (("train", 8), ("test", 4)):
        images = pa.FixedSizeListArray.from_arrays(pa.array(rng.integers(0, 256, n * 16, dtype=np.uint8)), 16)
        table = pa.table({"image": images, "label": pa.array(rng.integers(0, 2, n), pa.int64())})
        pq.write_table(table.replace_schema_metadata(meta), root / f"{split}.parquet", compression="none",
                       write_statistics=False, use_dictionary=False)  # plain: the size is the row count's


def test_two_versions_of_a_parquet_set_have_different_digests(tmp_path):
    _write_version(tmp_path, seed=0)
    first = load_splits("parquet", root=str(tmp_path), val_size=2).files
    described = describe_splits("parquet", root=str(tmp_path), val_size=2).files  # a Ray Train driver's view
    assert first is not None and described == first  # the same identity, whether the images were read or not
    assert [name for name, _, _ in first.stamps] == ["train.parquet", "test.parquet"]
    sizes = [size for _, size, _ in first.stamps]
    again = load_splits("parquet", root=str(tmp_path), val_size=2, limit=3).files  # fewer rows read: same set
    assert again == first
    _write_version(tmp_path, seed=1)  # a new version: same names and sizes, other pixels
    # the kernel stamps a write with a coarse clock (a few ms): two versions written within one tick
    # would share their times, which a real new version (written later) does not
    os.utime(tmp_path / "test.parquet", ns=(1, first.stamps[1][2] + 1))
    second = load_splits("parquet", root=str(tmp_path), val_size=2).files
    assert second is not None and [size for _, size, _ in second.stamps] == sizes
    assert second.digest != first.digest
    one, two = (dataset_input("parquet", f).dataset for f in (first, second))
    assert (one.name, one.source) == (two.name, two.source) and one.digest != two.digest  # as the UI lists them
    assert one.digest == first.digest and '"files": 2' in one.profile


def test_a_registered_set_names_the_files_it_read():
    files = load_splits("fashion_mnist", limit=10, val_size=10, test_limit=0).files
    assert files is not None and len(files.stamps) == 4 and all(size > 0 for _, size, _ in files.stamps)
    assert files.location in {"/usr/share/datasets/fashion-mnist", str(ROOT / "data" / "FashionMNIST" / "raw")}


def test_git_tags_of_a_checkout_and_none_outside_one(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    tags = source_tags()
    assert tags["mlflow.source.git.commit"] == head and tags["mlflow.source.type"] == "LOCAL"
    assert "mlflow.source.name" in tags
    # the package installed where no checkout holds it: no git tags, no error
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "distributed_adcs", site / "distributed_adcs",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import json, distributed_adcs; from distributed_adcs.tracking.provenance import source_tags; "
            "print(distributed_adcs.__file__); print(json.dumps(source_tags()))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    where, tags = proc.stdout.splitlines()[-2:]
    assert where.startswith(str(site)) and '"mlflow.source.type": "LOCAL"' in tags and "git" not in tags
