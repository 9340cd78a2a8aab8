"""Cluster shapes that do not fit a single local Ray, on a real multi-node Ray on one machine
(``ray.cluster_utils.Cluster``: one raylet per node): a head with no CPUs, trial drivers that
need the head's custom resource, a store on one node's disk."""

from __future__ import annotations

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from distributed_adcs.config import UsageError, load_config
from distributed_adcs.distributed.sweep import DRIVER_RESOURCE, check_sweep_store, trial_resources

from helpers import TINY

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    """A head with no CPUs (driver and control plane only) and one 2-CPU worker node."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True,
                                                      "dashboard_host": "127.0.0.1",
                                                      "object_store_memory": 256 * 2**20})
    worker = c.add_node(num_cpus=2, object_store_memory=256 * 2**20)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, worker
    ray.shutdown()
    c.shutdown()


def test_ray_train_job_on_a_head_without_cpus_runs_its_worker_on_the_worker_node(cluster, tmp_path):
    from ray.util.state import list_actors

    from distributed_adcs.run import train

    c, worker = cluster
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("configs/quickstart.yaml", [*TINY, "coreset.method=craig", "coreset.warmup_epochs=1",
                                                  "ray.num_workers=1", "ray.cpus_per_worker=1", f"ray.address={c.address}",
                                                  f"mlflow.tracking_uri={uri}", f"train.output_dir={tmp_path / 'runs'}"])
    run_id = train(cfg)
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
    workers = [a for a in list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=1000)]
    assert workers and {a.node_id for a in workers} == {worker.node_id}  # never the CPU-less head


def test_sweep_trials_need_the_driver_resource_the_cluster_lacks(cluster):
    assert trial_resources(False, 1.0) == {"CPU": 1.0}  # in-process trials hold their CPUs
    with pytest.raises(UsageError, match=rf"needs the custom resource {DRIVER_RESOURCE}.*and this cluster has none: "
                                         rf"start its head with ray start --head --resources="):
        trial_resources(True, 1.0)


def test_sweep_with_a_file_store_on_a_multi_node_cluster_refuses(cluster, tmp_path):
    with pytest.raises(UsageError, match=r"train on any of the cluster's 2 nodes, but MLflow records into .*mlflow.db, "
                                         r"a file of one node"):
        check_sweep_store(f"sqlite:///{tmp_path / 'mlflow.db'}", distributed=False)
    check_sweep_store("http://mlflow:5000", distributed=False)  # a tracking server: fine
    check_sweep_store(f"sqlite:///{tmp_path / 'mlflow.db'}", distributed=True)  # drivers stay on the head


def test_a_head_that_declares_the_driver_resource_gets_trial_drivers(cluster):
    c, _ = cluster
    node = c.add_node(num_cpus=0, resources={DRIVER_RESOURCE: 1000})
    c.wait_for_nodes()
    try:
        assert trial_resources(True, 1.0) == {DRIVER_RESOURCE: 0.01}
    finally:
        c.remove_node(node)
