"""The Ray settings of a local Ray that adcs starts, in one place: ``connect`` applies them
before ``ray.init``, and tests/conftest.py before the Rays the tests start themselves
(``ray.init`` of a module, ``ray start`` heads), so that both run the same processes.
Imports nothing: the raylet and Ray Train read them from the environment at start-up."""

from __future__ import annotations

import os

LOCAL_RAY_ENV = {
    # Ray runs workers at nice 15. On a small machine its own daemons then preempt the training
    # worker's OpenMP threads mid-barrier: a PGD epoch in a Ray Train worker took 1.6x the same
    # epoch in-process (benchmarks/bench_ray_train.py). Workers get the driver's priority instead.
    "RAY_worker_niceness": "0",
    # Every Ray worker process wakes 100 times a second; two kinds serve no purpose on a local,
    # single-node Ray: idle workers prestarted for the first driver (every actor we create starts
    # its own process anyway), and Ray Train's preemption watcher (no autoscaler drains a node).
    # Each costs 1.5 to 3 CPU-seconds (measured per process: docs/measurements.md).
    "RAY_prestart_worker_first_driver": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def use_local_ray_env() -> None:
    """Set each of ``LOCAL_RAY_ENV`` unless the environment already has it (a user's own wins)."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
