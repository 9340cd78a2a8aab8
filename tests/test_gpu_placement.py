"""GPU placement on a real multi-node Ray with logical GPUs (``ray.cluster_utils.Cluster``): a
CPU-less head and 4 nodes of {CPU: 8, GPU: 1}, the shape of cluster/rayjob.yaml's 4-GPU job.
No CUDA is needed: Ray places by its logical resources, and so do these tests.

Half-GPU embedding actors (an in-process job's selection) take every GPU while they live, so
4 one-GPU Train workers cannot be placed beside them; once they are gone, they can. The job
shapes the code builds (``resources.job_bundles``) are checked against this cluster's nodes
(``check_cluster``) and then really placed, as Ray Train places its workers (a placement group
of the same bundles)."""

from __future__ import annotations

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group, remove_placement_group

from distributed_adcs.config import load_config
from distributed_adcs.distributed.resources import InsufficientResources, check_cluster, job_bundles

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def gpu_cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 128 * 2**20})
    for _ in range(4):
        c.add_node(num_cpus=8, num_gpus=1, object_store_memory=128 * 2**20)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def _cfg(*sets):
    return load_config(None, ["coreset.method=craig", "train.epochs=3", "coreset.warmup_epochs=1", "ray.use_gpu=true",
                              *sets])


TRAIN = ("ray.num_workers=4", "ray.cpus_per_worker=2")
ACTORS = ("ray.num_workers=0", "ray.num_actors=8", "ray.cpus_per_actor=1", "ray.gpus_per_actor=0.5")


def test_the_jobs_that_fit_are_accepted_and_the_one_that_cannot_is_named(gpu_cluster):
    check_cluster(_cfg(*TRAIN))
    check_cluster(_cfg(*ACTORS))
    with pytest.raises(InsufficientResources, match=r"needs 5 Ray Train workers of \{CPU: 2, GPU: 1\} each .*"
                                                    r"the cluster has \{CPU: 32, GPU: 4\} on 5 node\(s\)"):
        check_cluster(_cfg("ray.num_workers=5", "ray.cpus_per_worker=2"))
    with pytest.raises(InsufficientResources, match="9 embedding actors"):
        check_cluster(_cfg(*ACTORS, "ray.num_actors=9"))


def test_half_gpu_actors_then_the_train_workers_placement_succeeds(gpu_cluster):
    @ray.remote
    class Selector:
        def gpu_ids(self) -> list:
            return ray.get_runtime_context().get_accelerator_ids()["GPU"]

    bundles = job_bundles(_cfg(*ACTORS))
    assert bundles == [{"CPU": 1.0, "GPU": 0.5}] * 8
    actors = [Selector.options(num_cpus=b["CPU"], num_gpus=b["GPU"]).remote() for b in bundles]
    ids = ray.get([a.gpu_ids.remote() for a in actors], timeout=120)
    assert all(len(i) == 1 for i in ids)  # each on one GPU, two to a GPU
    train = job_bundles(_cfg(*TRAIN))
    assert train == [{"CPU": 2.0, "GPU": 1.0}] * 4
    beside = placement_group(train, strategy="PACK")
    assert not beside.wait(timeout_seconds=5)  # enough for one phase, not for both at once
    remove_placement_group(beside)
    for a in actors:
        ray.kill(a)
    workers = placement_group(train, strategy="PACK")  # Ray Train's placement of its worker group
    try:
        assert workers.wait(timeout_seconds=60)
    finally:
        remove_placement_group(workers)
