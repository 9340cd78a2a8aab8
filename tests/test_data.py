"""Data layer: real Fashion-MNIST files, tiny files in each real format, Parquet, batching."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from distributed_adcs.data import (
    AUGMENTATIONS,
    DATASET_STATS,
    DATASETS,
    FASHION_MNIST_SYSTEM_DIR,
    ImageSet,
    Splits,
    default_augmentation,
    export_parquet,
    get_augmentation,
    iterate_batches,
    load_splits,
    num_batches,
)
from distributed_adcs.data.types import channel_stats

sys.path.insert(0, str(Path(__file__).parent))  # fixtures_formats sits beside this file
import fixtures_formats as ff  # noqa: E402

# ---------------------------------------------------------------- real Fashion-MNIST


@pytest.fixture(scope="module")
def fashion() -> Splits:
    return load_splits("fashion_mnist")  # Debian's files in FASHION_MNIST_SYSTEM_DIR


def _raw_bytes(stem: str, offset: int, count: int) -> np.ndarray:
    """Bytes of a Fashion-MNIST IDX file where the loader finds it (Debian's dir or ./data)."""
    folders = [Path(FASHION_MNIST_SYSTEM_DIR), Path("data") / "FashionMNIST" / "raw"]
    path = next(f / n for f in folders for n in (f"{stem}.gz", stem) if (f / n).is_file())
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8)[offset : offset + count]


def test_fashion_mnist_shapes_and_indices(fashion: Splits) -> None:
    assert (len(fashion.train), len(fashion.val), len(fashion.test)) == (59000, 1000, 10000)
    assert fashion.image_shape == (1, 28, 28) and fashion.num_classes == 10
    assert fashion.train.images.shape == (59000, 1, 28, 28) and fashion.train.images.dtype == torch.uint8
    assert torch.equal(fashion.train.indices, torch.arange(59000))
    assert torch.equal(fashion.val.indices, torch.arange(59000, 60000))  # the last val_size examples
    assert torch.equal(fashion.test.indices, torch.arange(10000))
    assert int(fashion.train.images.min()) == 0 and int(fashion.train.images.max()) == 255
    floats = fashion.test.float_images(torch.tensor([0, 9999]))
    assert floats.dtype == torch.float32 and 0.0 <= float(floats.min()) and float(floats.max()) <= 1.0
    assert torch.equal((floats * 255).round().to(torch.uint8), fashion.test.images[[0, 9999]])


def test_fashion_mnist_label_counts(fashion: Splits) -> None:
    source_train = torch.cat([fashion.train.labels, fashion.val.labels])
    assert torch.equal(torch.bincount(source_train, minlength=10), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(fashion.test.labels, minlength=10), torch.full((10,), 1000))


def test_fashion_mnist_matches_raw_file(fashion: Splits) -> None:
    # IDX labels start after an 8-byte header, images after 16 bytes.
    first_labels = _raw_bytes("train-labels-idx1-ubyte", 8, 5)
    assert fashion.train.labels[:5].tolist() == first_labels.tolist()
    last_label = _raw_bytes("train-labels-idx1-ubyte", 8 + 59999, 1)
    assert int(fashion.val.labels[-1]) == int(last_label[0])
    first_image = _raw_bytes("train-images-idx3-ubyte", 16, 784)
    assert fashion.train.images[0].flatten().tolist() == first_image.tolist()
    test_image = _raw_bytes("t10k-images-idx3-ubyte", 16 + 784 * 9999, 784)
    assert fashion.test.images[9999].flatten().tolist() == test_image.tolist()


def test_fashion_mnist_mean_std_constants(fashion: Splits) -> None:
    mean, std = channel_stats(torch.cat([fashion.train.images, fashion.val.images]))
    assert fashion.mean == DATASET_STATS["fashion_mnist"][0]
    assert mean[0] == pytest.approx(fashion.mean[0], abs=1e-3)
    assert std[0] == pytest.approx(fashion.std[0], abs=1e-3)


def test_fashion_mnist_limit_takes_first_and_val_is_fixed(fashion: Splits) -> None:
    small = load_splits("fashion_mnist", limit=100, val_size=1000)
    assert torch.equal(small.train.indices, torch.arange(100))
    assert torch.equal(small.train.images, fashion.train.images[:100])
    assert torch.equal(small.val.images, fashion.val.images)  # independent of limit
    assert torch.equal(small.val.labels, fashion.val.labels)
    assert len(small.test) == 10000
    assert small.train.images.untyped_storage().nbytes() == 100 * 784  # owns its data, not a view of 60k


# ---------------------------------------------------------------- tiny real-format files


def _data(seed: int, n: int, channels: int, size: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    return ff.random_images(seed, n, channels, size, size), ff.random_labels(seed, n, classes)


def _assert_same(splits: Splits, train: tuple, test: tuple, val_size: int) -> None:
    """Loaded splits equal the written arrays; train + val reassemble the source split."""
    images = torch.cat([splits.train.images, splits.val.images]).numpy()
    labels = torch.cat([splits.train.labels, splits.val.labels]).numpy()
    np.testing.assert_array_equal(images, train[0])
    np.testing.assert_array_equal(labels, train[1])
    np.testing.assert_array_equal(splits.test.images.numpy(), test[0])
    np.testing.assert_array_equal(splits.test.labels.numpy(), test[1])
    assert len(splits.val) == val_size
    assert splits.train.labels.dtype == torch.int64


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path: Path, gz: bool) -> None:
    train, test = _data(1, 12, 1, 28, 10), _data(2, 5, 1, 28, 10)
    ff.write_mnist_dir(tmp_path / "MNIST" / "raw", train, test, gz=gz)  # torchvision's layout
    splits = load_splits("mnist", root=str(tmp_path), val_size=3)
    _assert_same(splits, train, test, 3)
    assert splits.mean == DATASET_STATS["mnist"][0] and splits.image_shape == (1, 28, 28)


def test_fashion_mnist_from_given_flat_root(tmp_path: Path) -> None:
    train, test = _data(3, 9, 1, 28, 10), _data(4, 4, 1, 28, 10)
    ff.write_mnist_dir(tmp_path, train, test, gz=True)  # Debian's flat layout
    _assert_same(load_splits("fashion_mnist", root=str(tmp_path), val_size=2), train, test, 2)


@pytest.mark.parametrize(
    "name, writer, classes", [("cifar10", ff.write_cifar10, 10), ("cifar100", ff.write_cifar100, 100)]
)
def test_cifar_pickles(tmp_path: Path, name: str, writer, classes: int) -> None:
    train, test = _data(5, 11, 3, 32, classes), _data(6, 4, 3, 32, classes)
    writer(tmp_path, train, test)
    splits = load_splits(name, root=str(tmp_path), val_size=2)
    _assert_same(splits, train, test, 2)
    red = splits.train.images[0]  # written as pure red: channel 0 only
    assert bool((red[0] == 255).all()) and int(red[1:].max()) == 0
    assert splits.num_classes == classes and splits.image_shape == (3, 32, 32)


def test_svhn_mat_files(tmp_path: Path) -> None:
    train, test = _data(7, 10, 3, 32, 10), _data(8, 6, 3, 32, 10)
    ff.write_svhn(tmp_path, train, test)
    splits = load_splits("svhn", root=str(tmp_path), val_size=1)
    _assert_same(splits, train, test, 1)  # digit 0 is stored as 10 on disk
    assert int(splits.train.labels[0]) == 0 and 0 in splits.test.labels.tolist()
    red = splits.train.images[0]
    assert bool((red[0] == 255).all()) and int(red[1:].max()) == 0


# ---------------------------------------------------------------- Parquet


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
@pytest.mark.parametrize("encoding", ["png", "array"])
def test_export_parquet_round_trip(tmp_path: Path, name: str, encoding: str) -> None:
    channels, size = (3, 32) if name == "cifar10" else (1, 28)
    train, test = _data(9, 10, channels, size, 10), _data(10, 4, channels, size, 10)
    src = tmp_path / "src"
    if name == "cifar10":
        ff.write_cifar10(src, train, test)
    else:
        ff.write_mnist_dir(src / "MNIST" / "raw", train, test)
    files = export_parquet(name, tmp_path / "pq", root=str(src), encoding=encoding, rows_per_file=4)
    assert [Path(p).name for p in files][:3] == ["train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
                                           "train-00002-of-00003.parquet"]
    assert len(files) == 4  # 10 train rows in 3 files, 4 test rows in 1
    meta = pq.read_schema(files[0]).metadata
    assert json.loads(meta[b"adcs.image_shape"]) == [channels, *train[0].shape[2:]]
    assert json.loads(meta[b"adcs.num_classes"]) == 10
    loaded = load_splits("parquet", root=str(tmp_path / "pq"), val_size=3)
    _assert_same(loaded, train, test, 3)
    assert loaded.num_classes == 10
    assert loaded.mean == pytest.approx(DATASET_STATS[name][0]) and loaded.std == pytest.approx(DATASET_STATS[name][1])
    with pytest.raises(FileExistsError):
        export_parquet(name, tmp_path / "pq", root=str(src))
    assert len(export_parquet(name, tmp_path / "pq", root=str(src), overwrite=True)) == 2


def _png(image_chw: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    pixels = image_chw[0] if image_chw.shape[0] == 1 else image_chw.transpose(1, 2, 0)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_handwritten_parquet_png_without_metadata(tmp_path: Path) -> None:
    images, labels = _data(11, 9, 3, 8, 4)
    parts = (("train_b.parquet", slice(3, 7)), ("train_a.parquet", slice(0, 3)), ("test.parquet", slice(7, 9)))
    for name, rows in parts:
        table = pa.table({"label": pa.array(labels[rows], pa.int32()), "image": [_png(i) for i in images[rows]]})
        pq.write_table(table, tmp_path / name)
    splits = load_splits("parquet", root=str(tmp_path), val_size=1)
    _assert_same(splits, (images[:7], labels[:7]), (images[7:], labels[7:]), 1)  # files read in name order
    assert splits.num_classes == int(labels.max()) + 1
    expected = images[:7].astype(np.float64) / 255
    assert splits.mean == pytest.approx(tuple(expected.mean(axis=(0, 2, 3))), abs=1e-9)
    assert splits.std == pytest.approx(tuple(expected.std(axis=(0, 2, 3))), abs=1e-9)


def test_handwritten_parquet_nested_flat_and_struct(tmp_path: Path) -> None:
    images, labels = _data(12, 8, 3, 6, 3)
    nested = pa.table({"img": pa.array(images[:4].tolist(), pa.list_(pa.list_(pa.list_(pa.uint8())))),
                       "y": pa.array(labels[:4], pa.int64())})  # [C][H][W] per row
    shape_meta = {b"adcs.image_shape": b"[3, 6, 6]", b"adcs.num_classes": b"5"}
    flat = pa.table({"img": pa.array(images[4:6].reshape(2, -1).tolist(), pa.list_(pa.int16())),
                     "y": pa.array(labels[4:6], pa.int8())}).replace_schema_metadata(shape_meta)
    struct_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # Hugging Face's image column
    hf = pa.table({"img": pa.array([{"bytes": _png(i), "path": None} for i in images[6:]], struct_type),
                   "y": pa.array(labels[6:], pa.int64())})
    pq.write_table(flat, tmp_path / "train-0.parquet")  # first train file carries the metadata
    pq.write_table(nested, tmp_path / "train-1.parquet")
    pq.write_table(hf, tmp_path / "test.parquet")
    splits = load_splits("parquet", root=str(tmp_path), val_size=2, image_column="img", label_column="y")
    order = np.r_[4:6, 0:4]
    _assert_same(splits, (images[order], labels[order]), (images[6:], labels[6:]), 2)
    assert splits.num_classes == 5 and splits.image_shape == (3, 6, 6)


def test_handwritten_parquet_grey_nested_hw(tmp_path: Path) -> None:
    images, labels = _data(16, 5, 1, 7, 2)
    rows = [img[0].tolist() for img in images]  # [H][W] per row: one channel
    for name, part in (("train.parquet", slice(0, 3)), ("test.parquet", slice(3, 5))):
        pq.write_table(pa.table({"image": rows[part], "label": labels[part]}), tmp_path / name)
    splits = load_splits("parquet", root=str(tmp_path), val_size=1)
    _assert_same(splits, (images[:3], labels[:3]), (images[3:], labels[3:]), 1)
    assert splits.image_shape == (1, 7, 7)


def test_parquet_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train"):
        load_splits("parquet", root=str(tmp_path))
    table = pa.table({"image": pa.array([[1, 2, 3, 4]] * 3, pa.list_(pa.uint8())), "label": [0, 1, 0]})
    pq.write_table(table, tmp_path / "train.parquet")
    pq.write_table(table, tmp_path / "test.parquet")
    with pytest.raises(ValueError, match="adcs.image_shape"):
        load_splits("parquet", root=str(tmp_path), val_size=1)
    with pytest.raises(ValueError, match="columns"):
        load_splits("parquet", root=str(tmp_path), val_size=1, label_column="target")


# ---------------------------------------------------------------- batches and augmentation


def _toy_set(n: int = 23) -> ImageSet:
    images = torch.from_numpy(ff.random_images(13, n, 3, 8, 8))
    return ImageSet(images, torch.arange(n) % 4, torch.arange(100, 100 + n))


def test_iterate_batches_covers_each_position_once() -> None:
    data = _toy_set()
    batches = list(iterate_batches(data, 5, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == num_batches(23, 5) == 5 and [len(b) for b in batches] == [5, 5, 5, 5, 3]
    seen = torch.cat([b.position for b in batches])
    assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
    for b in batches:
        assert b.x.dtype == torch.float32 and 0.0 <= float(b.x.min()) and float(b.x.max()) <= 1.0
        assert torch.equal(b.x, data.images[b.position].float() / 255)
        assert torch.equal(b.y, data.labels[b.position]) and torch.equal(b.index, b.position + 100)
        assert torch.equal(b.weight, torch.ones(len(b)))
    in_order = torch.cat([b.position for b in iterate_batches(data, 4, shuffle=False)])
    assert in_order.tolist() == list(range(23))
    dropped = list(iterate_batches(data, 5, shuffle=False, drop_last=True))
    assert len(dropped) == num_batches(23, 5, drop_last=True) == 4


def test_iterate_batches_subset_and_weights_stay_aligned() -> None:
    data = _toy_set()
    positions = torch.tensor([3, 17, 0, 9, 22, 11, 5])
    weights = torch.tensor([0.5, 1.5, 2.0, 3.0, 4.0, 0.25, 7.0])
    expected = dict(zip(positions.tolist(), weights.tolist()))
    batches = list(iterate_batches(data, 3, shuffle=True, generator=torch.Generator().manual_seed(1),
                                   positions=positions, weights=weights))
    assert sorted(torch.cat([b.position for b in batches]).tolist()) == sorted(positions.tolist())
    for b in batches:
        assert b.weight.tolist() == [expected[p] for p in b.position.tolist()]
        assert torch.equal(b.y, data.labels[b.position])
    with pytest.raises(ValueError, match="align"):
        iterate_batches(data, 3, shuffle=False, positions=positions, weights=weights[:3])
    with pytest.raises(ValueError, match="positions"):
        iterate_batches(data, 3, shuffle=False, positions=torch.tensor([23]))


def test_iterate_batches_reproducible_with_seed() -> None:
    data = _toy_set()

    def epoch(seed: int) -> tuple[list[int], torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        batches = list(iterate_batches(data, 6, shuffle=True, generator=gen, augment=AUGMENTATIONS["crop_flip"]))
        return torch.cat([b.position for b in batches]).tolist(), torch.cat([b.x for b in batches])

    first, again, other = epoch(7), epoch(7), epoch(8)
    assert first[0] == again[0] and torch.equal(first[1], again[1])
    assert first[0] != other[0]


def _shift_flip(image: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    crop = padded[:, dy : dy + image.shape[1], dx : dx + image.shape[2]]
    return crop.flip(2) if flip else crop


def test_crop_flip_is_a_padded_crop_and_flip() -> None:
    x = torch.rand(16, 3, 8, 8)
    out = AUGMENTATIONS["crop_flip"](x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == x.dtype and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    again = AUGMENTATIONS["crop_flip"](x, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    choices = []
    for image, result in zip(x, out):
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if torch.equal(_shift_flip(image, dy, dx, f), result)]
        assert matches, "output is not a 4-px padded crop (optionally mirrored) of its input"
        choices.append(matches[0])
    assert len(set(choices)) > 1 and any(c[2] for c in choices) and any(not c[2] for c in choices)
    assert AUGMENTATIONS["none"](x, None) is x


def test_default_augmentations() -> None:
    assert default_augmentation("cifar10") == default_augmentation("cifar100") == "crop_flip"
    assert {default_augmentation(n) for n in ("mnist", "fashion_mnist", "svhn")} == {"none"}
    assert get_augmentation("auto", "cifar100") is AUGMENTATIONS["crop_flip"]
    with pytest.raises(ValueError, match="crop_flip"):
        get_augmentation("rotate")


# ---------------------------------------------------------------- errors


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(ValueError) as error:
        load_splits("imagenet")
    assert all(name in str(error.value) for name in DATASETS)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"])
def test_missing_files_without_download(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError) as error:
        load_splits(name, root=str(tmp_path), download=False)
    assert str(tmp_path) in str(error.value) and "data.download=true" in str(error.value)


def test_bad_limit_and_val_size(tmp_path: Path) -> None:
    train, test = _data(14, 10, 1, 28, 10), _data(15, 3, 1, 28, 10)
    ff.write_mnist_dir(tmp_path, train, test)
    root = str(tmp_path)
    assert len(load_splits("mnist", root=root, val_size=3, limit=7).train) == 7
    for kwargs in ({"limit": 8, "val_size": 3}, {"limit": 0}, {"val_size": 10}, {"val_size": -1}):
        with pytest.raises(ValueError):
            load_splits("mnist", root=root, **{"val_size": 3, **kwargs})


# ---------------------------------------------------------------- data roots on shared storage


def _row_grouped_set(root: Path, n: int = 40, group: int = 8) -> tuple[tuple, tuple]:
    train, test = _data(21, n, 1, 28, 10), _data(22, 6, 1, 28, 10)
    root.mkdir(parents=True)
    for split, (images, labels) in (("train", train), ("test", test)):
        for part, rows in enumerate((slice(0, len(labels) // 2), slice(len(labels) // 2, None))):
            table = pa.table({"image": pa.array(images[rows].reshape(len(labels[rows]), 1, 28, 28).tolist()),
                              "label": pa.array(labels[rows], type=pa.int64())})
            pq.write_table(table, root / f"{split}-{part}.parquet", row_group_size=group)
    return train, test


def test_parquet_root_as_file_uri_reads_the_same(tmp_path: Path) -> None:
    train, test = _row_grouped_set(tmp_path / "pq")
    by_path = load_splits("parquet", root=str(tmp_path / "pq"), val_size=4)
    by_uri = load_splits("parquet", root=f"file://{tmp_path / 'pq'}", val_size=4)
    _assert_same(by_uri, train, test, 4)
    for a, b in ((by_path.train, by_uri.train), (by_path.val, by_uri.val), (by_path.test, by_uri.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)


def test_parquet_with_limit_reads_only_the_row_groups_it_needs(tmp_path: Path) -> None:
    """40 rows in 2 files of 20, row groups of 8 (so 0-7, 8-15, 16-19 | 20-27, 28-35, 36-39);
    limit 5 and val 4 need rows 0..4 and 36..39: the first and the last row group (12 rows),
    and the splits equal those of a full read."""
    from distributed_adcs.data.splits import load_raw

    _row_grouped_set(tmp_path / "pq")
    raw = load_raw("parquet", str(tmp_path / "pq"), False, limit=5, val_size=4)
    assert raw.num_train == 40 and raw.train_positions.tolist() == [*range(0, 8), *range(36, 40)]
    part = load_splits("parquet", root=str(tmp_path / "pq"), limit=5, val_size=4)
    whole = load_splits("parquet", root=str(tmp_path / "pq"), val_size=4)
    assert part.train.indices.tolist() == [0, 1, 2, 3, 4] and part.val.indices.tolist() == [36, 37, 38, 39]
    assert torch.equal(part.train.images, whole.train.images[:5]) and torch.equal(part.val.images, whole.val.images)
    assert torch.equal(part.val.labels, whole.val.labels) and torch.equal(part.test.images, whole.test.images)
    full = load_raw("parquet", str(tmp_path / "pq"), False)  # no limit: every row, no positions
    assert full.train_positions is None and full.train_labels.numel() == 40


def test_a_process_reads_only_the_test_rows_it_evaluates(tmp_path: Path) -> None:
    """Test rows 0-2 | 3-5 in two files: test_limit 2 reads the first file alone (its second is
    made unreadable, so a read of it fails), 0 reads none; the class count stays that of the
    whole set (the labels are read), so every rank of a job builds the same model."""
    import pyarrow.parquet as pq

    _, test = _row_grouped_set(tmp_path / "pq")
    whole = load_splits("parquet", root=str(tmp_path / "pq"), val_size=4)
    second = tmp_path / "pq" / "test-1.parquet"
    table = pq.read_table(second)
    broken = table.set_column(0, "image", pa.array([b"not an image"] * table.num_rows))
    pq.write_table(broken, second)
    with pytest.raises(ValueError, match="no image PIL can decode"):
        load_splits("parquet", root=str(tmp_path / "pq"), val_size=4)
    two = load_splits("parquet", root=str(tmp_path / "pq"), val_size=4, test_limit=2)
    assert torch.equal(two.test.images, whole.test.images[:2]) and two.test.indices.tolist() == [0, 1]
    none = load_splits("parquet", root=str(tmp_path / "pq"), val_size=4, test_limit=0)
    assert len(none.test) == 0 and none.test.images.shape[1:] == whole.test.images.shape[1:]
    assert none.num_classes == two.num_classes == whole.num_classes
    assert torch.equal(none.train.images, whole.train.images) and torch.equal(none.val.images, whole.val.images)
    mnist = load_splits("fashion_mnist", limit=100, val_size=10, test_limit=7)  # a loader that reads it all: cut
    assert len(mnist.test) == 7 and mnist.test.indices.tolist() == list(range(7))
    with pytest.raises(ValueError, match="test_limit >= 0"):
        load_splits("fashion_mnist", test_limit=-1)


def test_a_parquet_set_is_described_without_reading_an_image(tmp_path: Path) -> None:
    """What a Ray Train job's driver reads: footers (and labels without class metadata). Every
    image is made undecodable, so a read of any row group fails; the description still comes,
    equal to what load_splits says of the intact set, with the same errors for a bad split."""
    from distributed_adcs.data import describe_splits

    _row_grouped_set(tmp_path / "pq")
    whole = load_splits("parquet", root=str(tmp_path / "pq"), limit=30, val_size=4)
    for path in (tmp_path / "pq").glob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.set_column(0, "image", pa.array([b"not an image"] * table.num_rows)), path,
                       row_group_size=8)
    with pytest.raises(ValueError, match="no image PIL can decode"):
        load_splits("parquet", root=str(tmp_path / "pq"), limit=30, val_size=4)
    summary = describe_splits("parquet", root=str(tmp_path / "pq"), limit=30, val_size=4)
    assert (summary.num_train, summary.num_classes) == (whole.num_train, whole.num_classes) == (30, 10)
    assert describe_splits("parquet", root=str(tmp_path / "pq"), val_size=4).num_train == 36
    with pytest.raises(ValueError, match=r"limit=37 must be in \[1, 36\]"):
        describe_splits("parquet", root=str(tmp_path / "pq"), limit=37, val_size=4)
    with pytest.raises(ValueError, match=r"no column\(s\) \['pixels'\]"):
        describe_splits("parquet", root=str(tmp_path / "pq"), image_column="pixels")
    with pytest.raises(FileNotFoundError, match="parquet: no"):
        describe_splits("parquet", root=str(tmp_path / "nowhere"))
    mnist = describe_splits("fashion_mnist", limit=100, val_size=10)  # the other sets: loaded, then described
    assert (mnist.num_train, mnist.num_classes) == (100, 10)


def test_parquet_root_uri_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^cannot open nosuch://bucket/set: Unrecognized filesystem type"):
        load_splits("parquet", root="nosuch://bucket/set")
    with pytest.raises(FileNotFoundError, match=r"parquet: no file://.*/empty/train\*\.parquet"):
        load_splits("parquet", root=f"file://{tmp_path / 'empty'}")


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "svhn"])
def test_torchvision_sets_refuse_a_remote_root_with_the_way_out(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}: data.root=s3://b/d is a remote URI.*adcs data export "
                                         rf"--dataset {name}.*data.name=parquet"):
        load_splits(name, root="s3://b/d")


def test_download_runs_once_when_ranks_ask_at_the_same_time(tmp_path: Path) -> None:
    """Two ranks with data.download=true on one root: the second waits for the first's download
    and finds the files (torchvision's download is stood in for by a writer of the real files:
    nothing can be downloaded here)."""
    import threading
    import time

    from distributed_adcs.data.vision import _load_mnist_family

    train, test = _data(5, 12, 1, 28, 10), _data(6, 4, 1, 28, 10)
    calls = []

    class SlowSource:  # torchvision's interface: Class(root, train=..., download=...) fetches the files
        def __init__(self, root, train, download):
            calls.append(threading.current_thread().name)
            time.sleep(0.5)
            ff.write_mnist_dir(Path(root) / "SlowSource" / "raw", train_data, test_data)

    train_data, test_data = train, test
    results, errors = [], []

    def rank():
        try:
            results.append(_load_mnist_family("mnist", SlowSource, str(tmp_path), True))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=rank, name=f"rank{r}") for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 2 and len(calls) == 1, (errors, calls)
    assert all(torch.equal(r.train_images, results[0].train_images) for r in results)
