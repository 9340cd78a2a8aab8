"""Shared test set-up: real data, a private MLflow store per test, one Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import ROOT

# Ray's token auth would make a local head and its clients disagree in tests (see the notes).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_worker_niceness", "0")  # as adcs sets for the Ray it starts
os.environ.setdefault("TQDM_DISABLE", "1")

# One intra-op thread per test process: on a busy 2-core machine tiny models run ~100x faster
# than with two contending threads (measured: 0.001 s vs 0.11 s per tiny forward).
torch.set_num_threads(1)

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def pytest_sessionstart(session):
    # The data is part of set-up (make test fetches it); a missing file is a failure, not a skip.
    files = list(FMNIST.glob("train-images-idx3-ubyte*")) + list((ROOT / "data").rglob("train-images-idx3-ubyte*"))
    if not files:
        raise pytest.UsageError("Fashion-MNIST missing: run `make data` (scripts/get_fashion_mnist.sh)")


@pytest.fixture
def mlflow_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray per test module (starting one costs seconds; modules that start their own
    Ray, or a head with ``ray start``, run when this one is down).

    4 logical CPUs on a 2-core machine: training workers and embedding actors of one job never
    compute at the same time (see distributed_adcs.distributed.cluster).
    """
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
             object_store_memory=512 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()
