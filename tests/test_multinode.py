"""Cluster shapes that do not fit a single local Ray, on a real multi-node Ray on one machine
(``ray.cluster_utils.Cluster``: one raylet per node): a head with no CPUs and two worker nodes,
Ray workers that may not open the driver's disk (an audit hook), trial drivers that need the
head's custom resource, a store on one node's disk."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from distributed_adcs.config import UsageError, load_config
from distributed_adcs.distributed.sweep import DRIVER_RESOURCE, check_sweep_store, trial_resources

from helpers import ROOT, TINY, free_port, mlflow_server, new_store

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head with no CPUs (driver and control plane only) and two 2-CPU worker nodes. Every Ray
    worker process runs tests/audit_hook.py: it refuses to open anything in ``driver_disk``,
    the driver's local disk that, on a real cluster, no other node has, and logs the attempt."""
    driver_disk = tmp_path_factory.mktemp("driver-disk")
    audit_log = tmp_path_factory.mktemp("audit") / "opened.log"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True,
                                                      "dashboard_host": "127.0.0.1",
                                                      # Cluster pins 8265 otherwise, which another
                                                      # test file's Ray may hold (pytest -n 2)
                                                      "dashboard_port": free_port(),
                                                      "object_store_memory": 256 * 2**20})
    workers = [c.add_node(num_cpus=2, object_store_memory=256 * 2**20) for _ in range(2)]
    c.wait_for_nodes()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")])),
           "ADCS_FORBIDDEN_DIRS": str(driver_disk), "ADCS_AUDIT_LOG": str(audit_log)}
    ray.init(address=c.address, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": "audit_hook.install", "env_vars": env})
    yield SimpleNamespace(cluster=c, address=c.address, workers=workers, driver_disk=driver_disk, audit_log=audit_log)
    ray.shutdown()
    c.shutdown()


def _opened(cluster) -> list[str]:
    """What Ray workers opened (or tried to) on the driver's disk."""
    return cluster.audit_log.read_text().splitlines() if cluster.audit_log.exists() else []


def test_the_audit_hook_stops_a_worker_that_opens_the_driver_disk(cluster):
    target = cluster.driver_disk / "probe.txt"
    target.write_text("only the driver's node has this file")

    def try_read(path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except PermissionError as err:
            return str(err)

    assert ray.get(ray.remote(num_cpus=1)(try_read).remote(str(target))) == f"a Ray worker opened {target}, on the driver's local disk"
    assert _opened(cluster)[-1].endswith(f" {target}")

    def train_worker(config: dict) -> None:  # a Ray Train worker gets the hook too (an actor of the controller)
        got = try_read(config["path"])
        if got != config["expected"]:  # fit() then fails
            raise AssertionError(f"a Train worker read the driver's file: {got!r}")

    refused = f"a Ray worker opened {target}, on the driver's local disk"
    trainer = TorchTrainer(train_worker, train_loop_config={"path": str(target), "expected": refused},
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                           run_config=RunConfig(storage_path=str(cluster.audit_log.parent / "ray")))
    assert trainer.fit().error is None
    assert len(_opened(cluster)) == 2
    cluster.audit_log.unlink()


def test_ray_train_job_on_two_worker_nodes_never_opens_the_driver_disk(cluster, tmp_path, monkeypatch):
    """Data and checkpoints on shared storage (``file://`` standing for it), 2 Train workers of
    2 CPUs (one per worker node), then the run continued from a checkpoint file on the driver's
    own disk: its bytes reach the workers through the object store."""
    from ray.util.state import list_actors

    from distributed_adcs.data import export_parquet
    from distributed_adcs.run import train

    shared = tmp_path / "shared"
    export_parquet("fashion_mnist", shared / "fmnist")
    monkeypatch.chdir(shared)  # (MLflow's default artifact root is relative to the working directory)
    uri = new_store(shared / "mlflow.db")
    sets = [*TINY, "data.name=parquet", f"data.root=file://{shared / 'fmnist'}", "coreset.method=craig",
            "coreset.warmup_epochs=1", "ray.num_workers=2", "ray.cpus_per_worker=2", f"ray.address={cluster.address}",
            f"mlflow.tracking_uri={uri}", f"train.output_dir=file://{shared / 'runs'}"]
    first = train(load_config(ROOT / "configs" / "quickstart.yaml", sets))
    resume = cluster.driver_disk / "resume.pt"
    shutil.copy(shared / "runs" / first / "last.pt", resume)
    second = train(load_config(ROOT / "configs" / "quickstart.yaml", [*sets, "train.epochs=3"]), resume=str(resume))
    client = MlflowClient(uri)
    assert {client.get_run(r).info.status for r in (first, second)} == {"FINISHED"}
    assert [m.step for m in client.get_metric_history(second, "train_loss")] == [2]  # from the driver's file
    workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=1000)
    assert {a.node_id for a in workers} == {w.node_id for w in cluster.workers}  # both, never the CPU-less head
    # each worker node recorded its own system metrics, under its node id (tracking/system.py)
    series = {k.split("/")[1] for k in client.get_run(first).data.metrics if k.startswith("system/")}
    assert series == {w.node_id[:8] for w in cluster.workers}
    assert _opened(cluster) == []


def test_in_process_job_ships_its_data_to_actors_on_the_worker_nodes(cluster, monkeypatch):
    """Data and output on the driver's disk: the embedding actors get the images through the
    object store and never open either."""
    from ray.util.state import list_actors

    from distributed_adcs.data import FASHION_MNIST_SYSTEM_DIR
    from distributed_adcs.run import train

    data = cluster.driver_disk / "fmnist"
    shutil.copytree(FASHION_MNIST_SYSTEM_DIR, data)
    monkeypatch.chdir(cluster.driver_disk)
    uri = new_store(cluster.driver_disk / "mlflow.db")
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [
        *TINY, f"data.root={data}", "coreset.method=craig", "coreset.warmup_epochs=1", "ray.num_workers=0",
        "ray.num_actors=2", "ray.cpus_per_actor=1", f"ray.address={cluster.address}", f"mlflow.tracking_uri={uri}",
        f"train.output_dir={cluster.driver_disk / 'runs'}"])
    run_id = train(cfg)
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
    actors = list_actors(filters=[("class_name", "=", "EmbeddingWorker")], limit=1000)
    assert len(actors) == 2 and {a.node_id for a in actors} <= {w.node_id for w in cluster.workers}
    assert _opened(cluster) == []


@pytest.mark.timeout(420)
def test_a_sweep_against_the_cluster_records_through_a_tracking_server(cluster, tmp_path):
    """``adcs sweep`` joined to the cluster: 2 in-process trials (1 CPU each, so on the worker
    nodes), MLflow over HTTP (a file store of one node is refused, see below), Tune's storage
    shared (``file://``), under a timeout; no trial opens the driver's disk."""
    import yaml

    from distributed_adcs.distributed.sweep import run_sweep
    from distributed_adcs.run import train
    from test_sweep import _write_sweep

    with mlflow_server(tmp_path, str(tmp_path / "server-artifacts")) as url:
        path = _write_sweep(tmp_path, url, {"train.lr": {"grid": [0.05, 0.02]}}, scheduler="fifo")
        spec = yaml.safe_load(path.read_text())
        spec["set"].update({"ray.address": cluster.address, "train.output_dir": f"file://{tmp_path / 'shared'}"})
        path.write_text(yaml.safe_dump(spec))
        parent = run_sweep(path, train)
        client = MlflowClient(url)
        exp = client.get_experiment_by_name("sweeps").experiment_id
        children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
        assert client.get_run(parent).info.status == "FINISHED"
        assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
        assert {"summary.csv", "best_config.yaml"} <= {a.path for a in client.list_artifacts(parent)}
    assert _opened(cluster) == []


def test_sweep_trials_need_the_driver_resource_the_cluster_lacks(cluster):
    assert trial_resources(False, 1.0) == {"CPU": 1.0}  # in-process trials hold their CPUs
    with pytest.raises(UsageError, match=rf"needs the custom resource {DRIVER_RESOURCE}.*and this cluster has none: "
                                         rf"start its head with ray start --head --resources="):
        trial_resources(True, 1.0)


def test_sweep_with_a_file_store_on_a_multi_node_cluster_refuses(cluster, tmp_path):
    with pytest.raises(UsageError, match=r"train on any of the cluster's 3 nodes, but MLflow records into .*mlflow.db, "
                                         r"a file of one node"):
        check_sweep_store(f"sqlite:///{tmp_path / 'mlflow.db'}", distributed=False)
    check_sweep_store("http://mlflow:5000", distributed=False)  # a tracking server: fine
    check_sweep_store(f"sqlite:///{tmp_path / 'mlflow.db'}", distributed=True)  # drivers stay on the head


def test_a_head_that_declares_the_driver_resource_gets_trial_drivers(cluster):
    c = cluster.cluster
    node = c.add_node(num_cpus=0, resources={DRIVER_RESOURCE: 1000})
    c.wait_for_nodes()
    try:
        assert trial_resources(True, 1.0) == {DRIVER_RESOURCE: 0.01}
    finally:
        c.remove_node(node)
