"""Shared test set-up: real data, a private MLflow store per test, one Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from distributed_adcs.distributed.local_env import use_local_ray_env
from helpers import ROOT, new_store

# Ray's token auth would make a local head and its clients disagree in tests (see the notes).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# As adcs sets for the Ray it starts (distributed/local_env.py), so that the Rays the tests start
# themselves (ray_session, `ray start` heads) and the jobs joining them run the same processes.
use_local_ray_env()
os.environ.setdefault("TQDM_DISABLE", "1")

# One intra-op thread per test process: on a busy 2-core machine tiny models run ~100x faster
# than with two contending threads (measured: 0.001 s vs 0.11 s per tiny forward). The
# environment carries it to every job a test starts (adcs, the benchmarks' smoke runs): with two
# xdist workers, each job's own 2 OpenMP threads made 4 to 6 spinning threads on 2 cores, and a
# smoke arm took 3 minutes instead of 20 s (a Ray worker gets its own count from its CPUs).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

FMNIST = Path("/usr/share/datasets/fashion-mnist")

# The suite's markers, per file, in one place (pyproject.toml declares them). `make test-fast`
# runs `-m "unit"`: what needs neither Ray, nor a subprocess job, nor minutes.
#   ray  - starts a real Ray (a local instance, a `ray start` head or a multi-node cluster)
#   slow - a test of this file takes tens of seconds or more (whole jobs, servers, signals); a test
#          of another file that takes 5 s or more carries @pytest.mark.slow itself
#   gpu  - the GPU code paths (logical GPUs, the GPU check's steps), run on the CPU here
#   unit - every test with none of the three (added below)
RAY_FILES = {"test_distributed", "test_methods", "test_storage", "test_multinode", "test_ray_jobs",
             "test_gpu_placement", "test_local_ray", "test_interrupts", "test_console", "test_s3", "test_sweep",
             "test_cli", "test_concurrent_jobs", "test_tracking_server", "test_ui_browser",
             "test_bench_quality", "test_docs", "test_selection_wait", "test_api", "test_sweep_search", "test_sweep_pbt"}
SLOW_FILES = {"test_interrupts", "test_s3", "test_multinode", "test_ray_jobs", "test_gpu_check", "test_bench_quality",
              "test_ui_browser", "test_concurrent_jobs", "test_tracking_server", "test_console", "test_sweep",
              "test_distributed", "test_storage", "test_bad_input", "test_cli", "test_guard", "test_selection_wait",
              "test_docs", "test_methods", "test_selection_pipeline", "test_ledger", "test_ema", "test_api",
              "test_sweep_search", "test_model_logging", "test_postgres_store", "test_provenance", "test_sweep_pbt"}
GPU_FILES = {"test_gpu_check", "test_gpu_placement", "test_precision"}


# The files that take longest (summed test time, docs/measurements.md), longest first. The suite
# runs them first, then the other slow files, then the rest: `make test` hands whole files to its
# two workers in this order (`-n 2 --dist loadfile --no-loadscope-reorder`: xdist would otherwise
# hand out the files with most tests first), and a long file picked up last would leave
# the other worker idle at the end.
LONGEST_FILES = ["test_interrupts", "test_bench_quality", "test_storage", "test_postgres_store", "test_multinode",
                 "test_s3", "test_ray_jobs", "test_console", "test_distributed", "test_sweep", "test_sweep_search",
                 "test_cli", "test_gpu_check"]


def _run_order(item) -> int:
    stem = item.path.stem
    if stem in LONGEST_FILES:
        return LONGEST_FILES.index(stem)
    return len(LONGEST_FILES) + (0 if stem in SLOW_FILES else 1)


def pytest_collection_modifyitems(config, items):
    for item in items:
        stem = item.path.stem
        for name, files in (("ray", RAY_FILES), ("slow", SLOW_FILES), ("gpu", GPU_FILES)):
            if stem in files and item.get_closest_marker(name) is None:
                item.add_marker(getattr(pytest.mark, name))
        if not any(item.get_closest_marker(m) for m in ("ray", "slow", "gpu")):
            item.add_marker(pytest.mark.unit)
    items.sort(key=_run_order)  # (stable: each file's tests keep their order)


def pytest_sessionstart(session):
    # The data is part of set-up (make test fetches it); a missing file is a failure, not a skip.
    files = list(FMNIST.glob("train-images-idx3-ubyte*")) + list((ROOT / "data").rglob("train-images-idx3-ubyte*"))
    if not files:
        raise pytest.UsageError("Fashion-MNIST missing: run `make data` (scripts/get_fashion_mnist.sh)")


@pytest.fixture
def mlflow_uri(tmp_path) -> str:
    """A new MLflow store of the test's own (a copy of an empty one: ``helpers.new_store``)."""
    return new_store(tmp_path / "mlflow.db")


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
