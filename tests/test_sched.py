"""A local Ray started by adcs has no idle processes; with ray.batch_scheduling it runs as
SCHED_BATCH while training threads run at the normal policy."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from distributed_adcs.config import JobConfig, RayConfig
from distributed_adcs.distributed.cluster import connect
from distributed_adcs.distributed.sched import batch_children, compute_section, compute_thread, thread_policy

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_BATCH is Linux's")

CHILD = [sys.executable, "-c", "import os; print(os.sched_getscheduler(0) == os.SCHED_BATCH)"]


def _in_thread(fn):
    box = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    return box[0]


def test_children_inherit_batch_and_the_caller_is_restored():
    assert thread_policy() == "other"
    with batch_children() as applied:
        assert applied and thread_policy() == "batch"
        child = subprocess.run(CHILD, capture_output=True, text=True, check=True).stdout.strip()
    assert child == "True"
    assert thread_policy() == "other"
    with batch_children(enabled=False) as applied:
        assert not applied and thread_policy() == "other"
        child = subprocess.run(CHILD, capture_output=True, text=True, check=True).stdout.strip()
    assert child == "False"


def test_compute_thread_leaves_other_threads_batch():
    def work():
        with batch_children():
            before = thread_policy()
            changed = compute_thread()
            after = thread_policy()
            again = compute_thread()  # already normal: nothing to do
        return before, changed, after, again

    assert _in_thread(work) == ("batch", True, "other", False)
    assert thread_policy() == "other"


def test_compute_section_is_normal_inside_and_batch_after():
    def work():
        with batch_children():
            with compute_section():
                inside = thread_policy()
            return inside, thread_policy()

    assert _in_thread(work) == ("other", "batch")


def _train_fn(config):
    before = thread_policy()
    compute_thread()
    idle = [p.info["cmdline"][0] for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [""])[0].startswith(("ray::IDLE", "ray::PreemptionWatcher"))]
    seen = {"before": before, "after": thread_policy(), "main_thread": thread_policy(threading.main_thread().native_id),
            "idle_processes": idle}
    Path(config["out"]).write_text(json.dumps(seen))  # same machine: the test reads it back


# Ray workers can't import this test module: ship _train_fn by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _raylet_policy() -> str:
    node = ray._private.worker._global_node
    return thread_policy(node.all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)


@pytest.mark.timeout(300)
def test_local_ray_is_batch_and_the_training_thread_is_not(tmp_path):
    assert not ray.is_initialized()
    cfg = JobConfig(ray=RayConfig(num_workers=1, num_actors=0, cpus_per_worker=1, batch_scheduling=True))
    assert connect(cfg)
    try:
        assert thread_policy() == "other"  # the driver's own thread is restored
        assert _raylet_policy() == "batch"
        out = tmp_path / "seen.json"
        TorchTrainer(_train_fn, train_loop_config={"out": str(out)}, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(storage_path=str(tmp_path))).fit()
        seen = json.loads(out.read_text())
        assert (seen["before"], seen["after"], seen["main_thread"]) == ("batch", "other", "batch")
        assert seen["idle_processes"] == []  # no prestarted workers, no preemption watcher
    finally:
        ray.shutdown()
    assert not RayConfig().batch_scheduling  # off by default
    assert connect(JobConfig(ray=RayConfig(num_workers=1, num_actors=0)))
    try:
        assert _raylet_policy() == "other"
    finally:
        ray.shutdown()
