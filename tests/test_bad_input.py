"""Bad input, every command: each case must end with one line that names the problem, a
non-zero exit, no traceback, no FINISHED MLflow run and no process left behind.

Every case runs the real ``adcs`` entry point in a process of its own session, in a fresh
working directory (so its default ``./mlflow.db`` is the case's own). Config and CLI errors
must also come fast: before torch, Ray or MLflow is imported, in a fresh interpreter. The
other cases run in processes forked from one that has imported them (tests/forkserver.py):
the same command in a process of its own, without 4 CPU-seconds of imports each.
"""

from __future__ import annotations

import os
import resource
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from fixtures_formats import random_images, random_labels, write_idx, write_mnist_dir
from forkserver import ForkServer
from helpers import ROOT, TINY, free_port, new_store

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
FAST_S = 1.5  # the bound for a config or CLI error


@dataclass
class Case:
    id: str
    argv: list[str]  # "{tmp}" is replaced by the case's directory
    expect: str  # the error line names this (case-insensitive)
    setup: Callable[[Path], None] | None = None
    fast: bool = False  # a config or CLI error: under FAST_S
    limit_file_bytes: int | None = None  # RLIMIT_FSIZE: a full disk for the files this process writes
    files: dict[str, str] = field(default_factory=dict)  # name -> text, written before the run


def _train(*sets: str, config: str = QUICKSTART, extra: tuple[str, ...] = ()) -> list[str]:
    """``adcs train`` of a tiny job with ``sets`` applied last."""
    args = ["train", "--config", config, *extra]
    for s in [*TINY, "train.epochs=1", "train.output_dir={tmp}/runs", *sets]:
        args += ["--set", s]
    return args


# ---- data on disk ------------------------------------------------------------------------

def _fmnist(tmp: Path, count: int = 64) -> Path:
    root = tmp / "fm"
    write_mnist_dir(root, (random_images(0, count, 1, 28, 28), random_labels(0, count, 10)),
                    (random_images(1, 32, 1, 28, 28), random_labels(1, 32, 10)))
    return root


def _empty_idx(tmp: Path) -> None:
    _fmnist(tmp)
    (tmp / "fm" / "train-images-idx3-ubyte").write_bytes(b"")


def _truncated_idx(tmp: Path) -> None:
    _fmnist(tmp)
    path = tmp / "fm" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])


def _corrupt_idx(tmp: Path) -> None:
    _fmnist(tmp)
    path = tmp / "fm" / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])


def _label_mismatch_idx(tmp: Path) -> None:  # 64 images, 50 labels
    root = _fmnist(tmp)
    write_idx(root / "train-labels-idx1-ubyte", random_labels(0, 50, 10).astype(np.uint8))


def _idx_label_out_of_range(tmp: Path) -> None:
    root = _fmnist(tmp)
    labels = random_labels(0, 64, 10).astype(np.uint8)
    labels[5] = 200
    write_idx(root / "train-labels-idx1-ubyte", labels)


def _parquet(tmp: Path, table) -> None:
    import pyarrow.parquet as pq

    root = tmp / "pq"
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "train.parquet")
    pq.write_table(table, root / "test.parquet")


def _png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _images(count: int, size: int = 28) -> list[bytes]:
    return [_png(random_images(i, 1, 1, size, size)[0, 0]) for i in range(count)]


def _pq_missing_label(tmp: Path) -> None:
    import pyarrow as pa

    _parquet(tmp, pa.table({"image": _images(40)}))


def _pq_label_strings(tmp: Path) -> None:
    import pyarrow as pa

    _parquet(tmp, pa.table({"image": _images(40), "label": [str(i % 3) for i in range(40)]}))


def _pq_mixed_sizes(tmp: Path) -> None:
    import pyarrow as pa

    images = _images(39) + [_png(random_images(9, 1, 1, 20, 20)[0, 0])]
    _parquet(tmp, pa.table({"image": images, "label": [i % 3 for i in range(40)]}))


def _pq_negative_label(tmp: Path) -> None:
    import pyarrow as pa

    _parquet(tmp, pa.table({"image": _images(40), "label": [-1] + [i % 3 for i in range(39)]}))


def _pq_label_over_declared(tmp: Path) -> None:
    import pyarrow as pa

    table = pa.table({"image": _images(40), "label": [i % 5 for i in range(40)]})
    _parquet(tmp, table.replace_schema_metadata({b"adcs.num_classes": b"3"}))


def _pq_not_images(tmp: Path) -> None:
    import pyarrow as pa

    _parquet(tmp, pa.table({"image": [b"not a png"] * 40, "label": [i % 3 for i in range(40)]}))


def _pq_corrupt(tmp: Path) -> None:
    root = tmp / "pq"
    root.mkdir()
    (root / "train.parquet").write_bytes(b"PAR1" + os.urandom(500))
    (root / "test.parquet").write_bytes(b"PAR1" + os.urandom(500))


def _pq_empty_dir(tmp: Path) -> None:
    (tmp / "pq").mkdir()


# ---- checkpoints ----------------------------------------------------------------------------

class _Payload:
    """Unpickling this runs a shell command: a checkpoint must never be unpickled with code."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _code_payload(tmp: Path) -> None:
    import torch

    torch.save({"model": _Payload()}, tmp / "evil.pt")


def _not_a_checkpoint(tmp: Path) -> None:
    (tmp / "junk.pt").write_bytes(os.urandom(2048))


def _text_checkpoint(tmp: Path) -> None:
    (tmp / "notes.pt").write_text("epoch: 3\n")


def _dict_without_model(tmp: Path) -> None:
    import torch

    torch.save({"epoch": 3, "weights": torch.zeros(3)}, tmp / "other.pt")


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> Path:
    """A real 1-epoch checkpoint of small_cnn on Fashion-MNIST (written by adcs train)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    args = _train(f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}", "data.limit=192", "data.val_size=64")
    args = [a.replace("{tmp}", str(tmp)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "distributed_adcs.cli", *args, "--quiet"], cwd=tmp,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ckpt,) = (tmp / "runs").rglob("last.pt")
    return ckpt


def _copy_real(name: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).write_bytes(Path(os.environ["ADCS_TEST_CKPT"]).read_bytes())
    return setup


# ---- sweeps -------------------------------------------------------------------------------

def _sweep(text: str) -> dict[str, str]:
    return {"sweep.yaml": text}


SWEEP_BASE = f"base: {QUICKSTART}\n"

# ---- the matrix -------------------------------------------------------------------------------

PARQUET = _train("data.name=parquet", "data.root={tmp}/pq")  # a tiny job on the case's Parquet set

CASES = [
    # configs: syntax and top-level shape
    Case("yaml-syntax", ["train", "--config", "{tmp}/c.yaml"], "invalid YAML", files={"c.yaml": "data: [\n"}, fast=True),
    Case("top-level-list", ["train", "--config", "{tmp}/c.yaml"], "top level must be a mapping",
         files={"c.yaml": "- data\n- model\n"}, fast=True),
    Case("top-level-scalar", ["train", "--config", "{tmp}/c.yaml"], "top level must be a mapping",
         files={"c.yaml": "3\n"}, fast=True),
    Case("section-scalar", ["train", "--config", "{tmp}/c.yaml"], "train: must be a mapping",
         files={"c.yaml": "train: 3\n"}, fast=True),
    Case("config-missing", ["train", "--config", "{tmp}/nope.yaml"], "config file not found", fast=True),
    Case("config-is-dir", ["train", "--config", "{tmp}"], "config file not found", fast=True),
    Case("config-binary", ["train", "--config", "{tmp}/c.yaml"], "c.yaml",
         setup=lambda t: (t / "c.yaml").write_bytes(b"\xff\xfe\x00\x01garbage"), fast=True),
    # configs: unknown names at every level
    Case("unknown-top", _train("trian.epochs=3"), "trian: unknown key", fast=True),
    Case("unknown-section-key", _train("train.epochz=3"), "train.epochz: unknown key", fast=True),
    Case("unknown-key-in-file", ["train", "--config", "{tmp}/c.yaml"], "data.nmae: unknown key",
         files={"c.yaml": "data: {nmae: fashion_mnist}\n"}, fast=True),
    Case("unknown-method", _train("coreset.method=kmeans"), "kmeans", fast=True),
    Case("unknown-objective", _train("objective.name=pgd_l3"), "objective.name", fast=True),
    Case("unknown-model", _train("model.name=vgg99"), "model.name", fast=True),
    Case("unknown-dataset", _train("data.name=imagenet"), "data.name", fast=True),
    Case("moved-plugin-key", _train("objective.beta=3"), "objective.beta: moved to objective.params.beta", fast=True),
    Case("param-of-another-entry", _train("objective.params.beta=3"), "objective.params.beta: unknown key", fast=True),
    # configs: types
    Case("type-str-for-int", _train("train.epochs=many"), "train.epochs", fast=True),
    Case("type-list-for-float", _train("train.lr=[1, 2]"), "train.lr", fast=True),
    Case("type-bool-for-int", _train("data.batch_size=true"), "data.batch_size", fast=True),
    Case("type-float-for-int", _train("train.epochs=2.5"), "train.epochs", fast=True),
    # configs: ranges, and epsilon against its norm
    Case("range-batch", _train("data.batch_size=0"), "data.batch_size", fast=True),
    Case("range-fraction", _train("coreset.fraction=1.5"), "coreset.fraction", fast=True),
    Case("range-seed", _train("seed=-1"), "seed", fast=True),
    Case("range-workers", _train("ray.num_workers=-1"), "ray.num_workers", fast=True),
    Case("eps-linf-8", _train("objective.epsilon=8"), "objective.epsilon: an l-inf radius", fast=True),
    Case("eps-nan", _train("objective.epsilon=.nan"), "objective.epsilon", fast=True),
    Case("eps-l2-past-image-space", _train("objective.name=pgd_l2", "objective.epsilon=30"),
         "objective.epsilon: an l2 radius on fashion_mnist", fast=True),
    Case("eval-eps-linf-2", _train("eval.epsilon=2"), "eval.epsilon: an l-inf radius", fast=True),
    # CLI shape
    Case("override-no-equals", _train("train.epochs"), "train.epochs", fast=True),
    Case("override-into-value", _train("train.epochs.x=1"), "train.epochs", fast=True),
    Case("unknown-command", ["trian"], "invalid choice", fast=True),
    Case("unknown-flag", ["train", "--epochs", "3"], "unrecognized arguments", fast=True),
    Case("evaluate-needs-source", ["evaluate"], "--checkpoint", fast=True),
    Case("evaluate-unknown-override", ["evaluate", "--checkpoint", "{tmp}/x.pt", "--set", "eval.pgd_stepz=3"],
         "eval.pgd_stepz: unknown key", fast=True),
    Case("ui-port-range", ["ui", "--port", "70000"], "--port", fast=True),
    # data: missing, empty, corrupt, truncated, wrong columns, mixed sizes, labels out of range
    Case("data-root-missing", _train("data.root={tmp}/nowhere"), "nowhere"),
    Case("idx-empty", _train("data.root={tmp}/fm"), "train-images", setup=_empty_idx),
    Case("idx-truncated", _train("data.root={tmp}/fm"), "header promises", setup=_truncated_idx),
    Case("idx-corrupt", _train("data.root={tmp}/fm"), "not an IDX file", setup=_corrupt_idx),
    Case("idx-count-mismatch", _train("data.root={tmp}/fm"), "labels", setup=_label_mismatch_idx),
    Case("idx-label-range", _train("data.root={tmp}/fm"), "label", setup=_idx_label_out_of_range),
    Case("parquet-no-root", _train("data.name=parquet"), "data.root"),
    Case("parquet-empty-dir", PARQUET, "train*.parquet", setup=_pq_empty_dir),
    Case("parquet-corrupt", PARQUET, "train.parquet", setup=_pq_corrupt),
    Case("parquet-missing-column", PARQUET, "no column(s) ['label']",
         setup=_pq_missing_label),
    Case("parquet-label-strings", PARQUET, "label column",
         setup=_pq_label_strings),
    Case("parquet-mixed-sizes", PARQUET, "row 39",
         setup=_pq_mixed_sizes),
    Case("parquet-negative-label", PARQUET, "label",
         setup=_pq_negative_label),
    Case("parquet-label-over-declared", PARQUET, "labels must lie in [0, 3)",
         setup=_pq_label_over_declared),
    Case("parquet-not-images", PARQUET, "image",
         setup=_pq_not_images),
    Case("export-unknown-dataset", ["data", "export", "--dataset", "imagenet", "--out", "{tmp}/o"], "imagenet"),
    Case("export-root-missing", ["data", "export", "--dataset", "fashion_mnist", "--root", "{tmp}/nowhere",
                                 "--out", "{tmp}/o"], "nowhere"),
    Case("export-out-is-file", ["data", "export", "--dataset", "fashion_mnist", "--out", "{tmp}/f/sub"], "f/sub",
         setup=lambda t: (t / "f").write_text("a file")),
    Case("export-disk-full", ["data", "export", "--dataset", "fashion_mnist", "--out", "{tmp}/o"], "file too large",
         limit_file_bytes=200_000),
    # checkpoints: missing, not one, a code payload, another model or data set
    Case("evaluate-missing", ["evaluate", "--checkpoint", "{tmp}/none.pt"], "checkpoint not found"),
    Case("evaluate-junk", ["evaluate", "--checkpoint", "{tmp}/junk.pt"], "junk.pt", setup=_not_a_checkpoint),
    Case("evaluate-text", ["evaluate", "--checkpoint", "{tmp}/notes.pt"], "notes.pt", setup=_text_checkpoint),
    Case("evaluate-code-payload", ["evaluate", "--checkpoint", "{tmp}/evil.pt"], "evil.pt", setup=_code_payload),
    Case("evaluate-other-dict", ["evaluate", "--checkpoint", "{tmp}/other.pt"], "other.pt", setup=_dict_without_model),
    Case("evaluate-other-model", ["evaluate", "--checkpoint", "{tmp}/real.pt", "--set", "model.name=resnet18"],
         "resnet18", setup=_copy_real("real.pt")),
    Case("resume-missing-run", _train(extra=("--resume", "0123456789abcdef0123456789abcdef")), "0123456789abcdef"),
    Case("resume-code-payload", _train(extra=("--resume", "{tmp}/evil.pt")), "evil.pt", setup=_code_payload),
    Case("resume-junk", _train(extra=("--resume", "{tmp}/junk.pt")), "junk.pt", setup=_not_a_checkpoint),
    Case("resume-other-model", _train("model.name=resnet18", extra=("--resume", "{tmp}/real.pt")), "model.name",
         setup=_copy_real("real.pt")),
    Case("resume-other-dataset", _train("data.name=mnist", "data.root={tmp}/fm", extra=("--resume", "{tmp}/real.pt")),
         "data.name", setup=lambda t: (_copy_real("real.pt")(t), _fmnist(t, 512))),
    # MLflow URIs, Ray addresses, ports, output directories
    Case("mlflow-bad-scheme", _train("mlflow.tracking_uri=foo://bar"), "foo://bar"),
    Case("mlflow-no-server", _train("mlflow.tracking_uri=http://127.0.0.1:{free_port}"), "127.0.0.1"),
    Case("evaluate-run-no-store", ["evaluate", "--run", "abc", "--tracking-uri", "sqlite:///{tmp}/none.db"], "none.db"),
    Case("ray-no-cluster", _train("ray.address=127.0.0.1:{free_port}", "ray.num_actors=1", "coreset.method=craig",
                                  "train.epochs=3", "coreset.warmup_epochs=1"),
         "127.0.0.1"),
    Case("output-dir-is-file", _train("train.output_dir={tmp}/f"), "train.output_dir",
         setup=lambda t: (t / "f").write_text("a file")),
    Case("ui-port-in-use", ["ui", "--tracking-uri", "sqlite:///{tmp}/m.db", "--port", "{busy_port}"], "in use",
         setup=lambda t: sqlite3.connect(t / "m.db").close()),
    Case("ui-no-store", ["ui", "--tracking-uri", "sqlite:///{tmp}/none.db"], "none.db", fast=True),
    # sweeps
    Case("sweep-missing", ["sweep", "--config", "{tmp}/none.yaml"], "none.yaml", fast=True),
    Case("sweep-top-level-list", ["sweep", "--config", "{tmp}/sweep.yaml"], "top level", files=_sweep("- a\n"),
         fast=True),
    Case("sweep-unknown-key", ["sweep", "--config", "{tmp}/sweep.yaml"], "train.epochz",
         files=_sweep(SWEEP_BASE + "search: {train.epochz: {grid: [1, 2]}}\n"), fast=True),
    Case("sweep-bad-kind", ["sweep", "--config", "{tmp}/sweep.yaml"], "search.train.lr",
         files=_sweep(SWEEP_BASE + "search: {train.lr: {gridd: [0.1]}}\n"), fast=True),
    Case("sweep-base-missing", ["sweep", "--config", "{tmp}/sweep.yaml"], "none.yaml",
         files=_sweep("base: none.yaml\nsearch: {train.lr: {grid: [0.1]}}\n"), fast=True),
    Case("sweep-bad-value", ["sweep", "--config", "{tmp}/sweep.yaml"], "coreset.fraction",
         files=_sweep(SWEEP_BASE + "search: {coreset.fraction: {grid: [0.2, 7]}}\n"), fast=True),
]




def _left_behind(tmp: Path) -> list[str]:
    """Processes whose working directory is the case's directory (Ray and MLflow daemons keep it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(pid) != os.getpid() and (cwd == str(tmp) or str(tmp) in cmd):
            found.append(f"{pid}: {cmd[:120]}")
    return found


def _finished_runs(tmp: Path) -> int:
    finished = 0
    for db in tmp.rglob("*.db"):
        con = sqlite3.connect(db)
        try:
            finished += con.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
        except sqlite3.DatabaseError:  # not an MLflow store (or no runs table yet)
            pass
        finally:
            con.close()
    return finished


def test_matrix_is_wide_enough():
    commands = {c.argv[0] if c.argv[0] != "data" else "data export" for c in CASES}
    assert len(CASES) >= 40 and {"train", "evaluate", "sweep", "data export", "ui"} <= commands
    assert sum("--resume" in c.argv for c in CASES) >= 3
    assert len({c.id for c in CASES}) == len(CASES)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    env["PYTHONPATH"] = str(ROOT / "tests")  # the code-payload class, if anything unpickled it
    return env


@pytest.fixture(scope="module")
def forked():
    server = ForkServer(_env())
    yield server
    server.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, request, monkeypatch):
    tmp = tmp_path
    for name, text in case.files.items():
        (tmp / name).write_text(text)
    if "real.pt" in " ".join(case.argv):
        monkeypatch.setenv("ADCS_TEST_CKPT", str(request.getfixturevalue("real_checkpoint")))
    if case.setup is not None:
        case.setup(tmp)
    if not case.limit_file_bytes:  # (a full disk is also a disk MLflow cannot build its store on)
        new_store(tmp / "mlflow.db")  # the default store of a job in this directory, built once per process
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    subs = {"{tmp}": str(tmp), "{free_port}": str(free_port()), "{busy_port}": str(busy.getsockname()[1])}
    argv = []
    for a in case.argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        argv.append(a)
    env = _env()  # (with ADCS_TEST_CKPT, set above)

    def limits() -> None:
        if case.limit_file_bytes:
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.limit_file_bytes, case.limit_file_bytes))

    t0 = time.perf_counter()
    try:
        if case.fast:  # a fresh interpreter: the error must come before the heavy imports
            proc = subprocess.run([sys.executable, "-m", "distributed_adcs.cli", *argv], cwd=tmp, env=env,
                                  capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                                  start_new_session=True, preexec_fn=limits)
        else:
            proc = request.getfixturevalue("forked").run(argv, cwd=tmp, env=env, timeout=300,
                                                         file_size_limit=case.limit_file_bytes)
    finally:
        busy.close()
    elapsed = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert lines, "no error line"
    assert case.expect.lower() in lines[-1].lower(), out[-3000:]
    assert lines[-1].startswith(("adcs", "usage")) or "error" in lines[-1], lines[-1]
    assert not (tmp / "pwned").exists(), "a checkpoint's pickled code ran"
    assert _finished_runs(tmp) == 0
    deadline = time.time() + 20
    while (left := _left_behind(tmp)) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, left
    if case.fast:
        assert elapsed < FAST_S, f"{elapsed:.2f} s: a config error must come before torch, Ray and MLflow load"
