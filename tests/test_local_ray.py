"""A local Ray started by adcs has no idle processes: no prestarted workers and no Ray Train
preemption watcher, each of which wakes 100 times a second (distributed/cluster.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil
import pytest
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from distributed_adcs.config import JobConfig, RayConfig
from distributed_adcs.distributed.cluster import connect
from distributed_adcs.distributed.local_env import LOCAL_RAY_ENV


def _children(raylet: int, *names: str) -> list[str]:
    """Processes of this Ray's raylet (another Ray on the machine, another test's beside this one
    under xdist, has its own) whose command line holds one of ``names``."""
    lines = [" ".join(p.info["cmdline"]) for p in psutil.process_iter(["cmdline", "ppid"])
             if p.info["ppid"] == raylet and p.info["cmdline"]]
    return [line[:80] for line in lines if any(name in line for name in names)]


def _train_fn(config):
    # the raylet started this worker; Train starts a group's preemption watcher (an actor) once the
    # group has started, so it may still be starting here: watched for 5 s
    until, watchers = time.monotonic() + 5, []
    while time.monotonic() < until and not watchers:
        watchers = _children(psutil.Process().ppid(), "ray::PreemptionWatcher")
        time.sleep(0.2)
    Path(config["out"]).write_text(json.dumps(watchers))  # same machine: the test reads it back


# Ray workers can't import this test module: ship _train_fn by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.mark.timeout(300)
def test_local_ray_has_no_idle_processes(tmp_path, monkeypatch):
    for name in LOCAL_RAY_ENV:
        monkeypatch.delenv(name, raising=False)  # (tests/conftest.py sets them for the tests' own Rays)
    assert not ray.is_initialized()
    assert connect(JobConfig(ray=RayConfig(num_workers=1, num_actors=0, cpus_per_worker=1)))
    try:
        # prestarted workers start when the first driver registers, before anything runs: for 5 s
        # after connecting, the raylet has no worker process at all. (Checked after training
        # instead, as this test once was, a worker that ran one of Train's short tasks and went
        # back to the pool as ray::IDLE was taken for a prestarted one, once in a clean clone.)
        raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
        until = time.monotonic() + 5
        while time.monotonic() < until:
            assert _children(raylet, "ray::IDLE", "default_worker.py") == []
            time.sleep(0.2)
        out = tmp_path / "watchers.json"
        TorchTrainer(_train_fn, train_loop_config={"out": str(out)}, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(storage_path=str(tmp_path))).fit()
        assert json.loads(out.read_text()) == []  # no preemption watcher
    finally:
        ray.shutdown()
