"""A local Ray started by adcs has no idle processes: no prestarted workers and no Ray Train
preemption watcher, each of which wakes 100 times a second (distributed/cluster.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from distributed_adcs.config import JobConfig, RayConfig
from distributed_adcs.distributed.cluster import connect
from distributed_adcs.distributed.local_env import LOCAL_RAY_ENV


def _train_fn(config):
    # this Ray's only: its raylet started this worker and every other; another Ray on the machine
    # (another test's, beside this one under xdist) may have idle workers of its own
    raylet = psutil.Process().ppid()
    idle = [p.info["cmdline"][0] for p in psutil.process_iter(["cmdline", "ppid"])
            if p.info["ppid"] == raylet and (p.info["cmdline"] or [""])[0].startswith(("ray::IDLE",
                                                                                   "ray::PreemptionWatcher"))]
    Path(config["out"]).write_text(json.dumps(idle))  # same machine: the test reads it back


# Ray workers can't import this test module: ship _train_fn by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.mark.timeout(300)
def test_local_ray_has_no_idle_processes(tmp_path, monkeypatch):
    for name in LOCAL_RAY_ENV:
        monkeypatch.delenv(name, raising=False)  # (tests/conftest.py sets them for the tests' own Rays)
    assert not ray.is_initialized()
    assert connect(JobConfig(ray=RayConfig(num_workers=1, num_actors=0, cpus_per_worker=1)))
    try:
        out = tmp_path / "idle.json"
        TorchTrainer(_train_fn, train_loop_config={"out": str(out)}, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(storage_path=str(tmp_path))).fit()
        assert json.loads(out.read_text()) == []  # no prestarted workers, no preemption watcher
    finally:
        ray.shutdown()
