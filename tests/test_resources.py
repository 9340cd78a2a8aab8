"""What a job asks Ray for, and the check that a cluster can ever hold it (no Ray needed)."""

from __future__ import annotations

import pytest

from distributed_adcs.config import load_config
from distributed_adcs.distributed.resources import InsufficientResources, check_fits, job_bundles, pack, total


def _cfg(*sets):
    return load_config(None, [*sets, "train.epochs=3", "coreset.warmup_epochs=1"])


def test_a_ray_train_job_holds_its_workers_only_selection_included():
    cfg = _cfg("coreset.method=craig", "ray.num_workers=4", "ray.cpus_per_worker=2", "ray.num_actors=4",
               "ray.use_gpu=true", "ray.gpus_per_actor=0.5")
    assert job_bundles(cfg) == [{"CPU": 2.0, "GPU": 1.0}] * 4  # no actor bundles beside the workers
    assert total(job_bundles(cfg)) == {"CPU": 8.0, "GPU": 4.0}


def test_an_in_process_job_holds_its_actors_only_when_the_method_uses_them():
    craig = _cfg("coreset.method=craig", "ray.num_workers=0", "ray.num_actors=3", "ray.cpus_per_actor=1")
    assert job_bundles(craig) == [{"CPU": 1.0}] * 3
    for method in ("random", "full"):
        assert job_bundles(_cfg(f"coreset.method={method}", "ray.num_workers=0", "ray.num_actors=3")) == []
    gpu = _cfg("coreset.method=gradmatch", "ray.num_workers=0", "ray.num_actors=2", "ray.use_gpu=true",
               "ray.gpus_per_actor=0.5")
    assert job_bundles(gpu) == [{"CPU": 1.0, "GPU": 0.5}] * 2


def test_pack_respects_nodes_not_only_the_total():
    nodes = [{"CPU": 8.0, "GPU": 1.0}] * 4  # 4 GPUs in all, one per node
    assert pack([{"CPU": 2.0, "GPU": 1.0}] * 4, nodes)
    assert not pack([{"CPU": 2.0, "GPU": 1.0}] * 5, nodes)
    assert not pack([{"CPU": 1.0, "GPU": 2.0}], nodes)  # 2 GPUs exist only across nodes
    assert pack([{"CPU": 4.0, "GPU": 0.5}] * 8, nodes)  # half-GPU bundles share a GPU
    assert not pack([{"CPU": 3.0}] * 3, [{"CPU": 4.0}, {"CPU": 4.0}])  # 6 <= 8 CPUs, but 3+3 > 4
    assert pack([{"CPU": 1.0}], [{"CPU": 0.0}, {"CPU": 1.0}])  # a head with no CPUs is skipped


def test_check_fits_names_what_is_needed_and_what_exists():
    cfg = _cfg("coreset.method=craig", "ray.num_workers=2", "ray.cpus_per_worker=2", "ray.use_gpu=true")
    check_fits(cfg, [{"CPU": 2.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 1.0}])
    with pytest.raises(InsufficientResources) as err:
        check_fits(cfg, [{"CPU": 0.0}, {"CPU": 4.0, "GPU": 1.0, "memory": 1e9, "node:10.0.0.1": 1.0}])
    message = str(err.value)
    assert "\n" not in message
    assert "needs 2 Ray Train workers of {CPU: 2, GPU: 1} each ({CPU: 4, GPU: 2} in all)" in message
    assert "the cluster has {CPU: 4, GPU: 1} on 2 node(s), the largest {CPU: 4, GPU: 1}" in message
    check_fits(_cfg("ray.num_workers=0", "ray.num_actors=0"), [])  # nothing asked, nothing to check
