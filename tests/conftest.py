"""Shared test set-up: real data, a private MLflow store per test, one Ray per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Ray's token auth would make a local head and its clients disagree in tests (see the notes).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def pytest_sessionstart(session):
    # The data is part of set-up (make test fetches it); a missing file is a failure, not a skip.
    files = list(FMNIST.glob("train-images-idx3-ubyte*")) + list((ROOT / "data").rglob("train-images-idx3-ubyte*"))
    if not files:
        raise pytest.UsageError("Fashion-MNIST missing: run `make data` (scripts/get_fashion_mnist.sh)")


@pytest.fixture
def mlflow_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def run_adcs(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real ``adcs`` console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "distributed_adcs.cli", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)


# A tiny real-data job: a few hundred Fashion-MNIST images, 2 epochs of small_cnn with PGD-2.
TINY = ["data.limit=384", "data.val_size=128", "data.batch_size=64", "data.eval_batch_size=128",
        "objective.steps=2", "eval.val_pgd_steps=2", "eval.pgd_steps=3", "eval.test_limit=128",
        "train.epochs=2", "coreset.method=full"]


def tiny_args(tmp_path: Path, mlflow_uri: str, *extra: str) -> list[str]:
    sets = [*TINY, f"mlflow.tracking_uri={mlflow_uri}", f"train.output_dir={tmp_path / 'runs'}", *extra]
    return [a for s in sets for a in ("--set", s)]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (starting one costs seconds).

    4 logical CPUs on a 2-core machine: training workers and embedding actors of one job never
    compute at the same time (see distributed_adcs.distributed.cluster).
    """
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
             object_store_memory=512 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()
