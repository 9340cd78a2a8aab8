"""System metrics and provenance through a real MLflow tracking server, for a job in this process
and a Ray Train job: each run has MLflow's system metrics (per node on Ray Train), the git commit
and source of its code, and its training set as a dataset input with a digest; a run exported to
a benchmark record and imported into another store keeps the provenance."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from distributed_adcs.config import load_config
from distributed_adcs.data import describe_splits
from distributed_adcs.tracking.provenance import log_dataset

from helpers import ROOT, TINY, mlflow_server, new_store

HEAD = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
# a sample a second, so that a tiny job samples a few times (the default is one per 30 s)
SAMPLING = "mlflow.system_metrics_interval_s=1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    where = tmp_path_factory.mktemp("server")
    with mlflow_server(where, str(where / "artifacts")) as url:
        yield url


def _cfg(url, tmp_path, *extra):
    return load_config("configs/quickstart.yaml", [*TINY, f"mlflow.tracking_uri={url}", "mlflow.experiment=provenance",
                                                   f"train.output_dir={tmp_path / 'runs'}", SAMPLING, *extra])


def _check_provenance(client, run) -> None:
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == HEAD and tags["mlflow.source.name"] and tags["mlflow.user"]
    (used,) = run.inputs.dataset_inputs
    files = describe_splits("fashion_mnist").files
    assert files is not None
    assert (used.dataset.name, used.dataset.digest, used.dataset.source_type) == ("fashion_mnist", files.digest, "local")
    assert {t.key: t.value for t in used.tags} == {"mlflow.data.context": "training"}


def _samples(client, run_id: str, key: str) -> list[float]:
    return [m.value for m in client.get_metric_history(run_id, key)]


def test_a_job_in_this_process_records_system_metrics_and_provenance(server, tmp_path):
    from distributed_adcs.run import train

    run_id = train(_cfg(server, tmp_path))
    client = MlflowClient(server)
    run = client.get_run(run_id)
    _check_provenance(client, run)
    cpu = _samples(client, run_id, "system/cpu_utilization_percentage")
    memory = _samples(client, run_id, "system/system_memory_usage_megabytes")
    assert cpu and memory and all(0 <= v <= 100 * 64 for v in cpu) and min(memory) > 0
    assert not [k for k in run.data.metrics if k.startswith("system/") and k.count("/") > 1]  # one machine: no node level
    # exported to a benchmark record and imported into another store, it keeps its provenance
    sys.path.insert(0, str(ROOT / "benchmarks"))  # (as tests/test_bench_quality.py imports the benchmark)
    from quality.records import export_records, import_records

    client.set_tag(run_id, "bench.key", "arm-0")
    assert export_records(client, "provenance", tmp_path / "records") == 1
    other = new_store(tmp_path / "other" / "mlflow.db")
    assert import_records(MlflowClient(other), other, "provenance", tmp_path / "records") == 1
    (copy,) = MlflowClient(other).search_runs([MlflowClient(other).get_experiment_by_name("provenance").experiment_id])
    assert copy.data.tags["bench.imported"] == run_id
    _check_provenance(MlflowClient(other), copy)
    assert {k: v for k, v in copy.data.tags.items() if k.startswith("mlflow.source")} == \
        {k: v for k, v in run.data.tags.items() if k.startswith("mlflow.source")}


def test_a_ray_train_job_records_each_nodes_system_metrics_and_provenance(server, tmp_path, ray_session):
    from distributed_adcs.run import train

    cfg = _cfg(server, tmp_path, "ray.num_workers=2", "ray.cpus_per_worker=1")
    run_id = train(cfg)
    client = MlflowClient(server)
    run = client.get_run(run_id)
    _check_provenance(client, run)
    from test_methods import DDP_ELSEWHERE, check_job

    assert "test_a_ray_train_job_records" in DDP_ELSEWHERE[cfg.coreset.method]  # the DDP test of full's shape
    check_job(run_id, server, cfg)
    node = ray_session.get_runtime_context().get_node_id()  # one node, two workers: one series
    keys = {k for k in run.data.metrics if k.startswith("system/")}
    assert f"system/{node[:8]}/cpu_utilization_percentage" in keys and all(k.startswith(f"system/{node[:8]}/") for k in keys)
    assert _samples(client, run_id, f"system/{node[:8]}/system_memory_usage_megabytes")
    assert f"Ray node {node}" in run.data.tags[f"adcs.node.{node[:8]}"]


def test_jobs_starting_at_once_on_one_experiment_each_log_the_dataset(server):
    """MLflow's log_inputs checks for the dataset row and then inserts it: jobs of one sweep
    opening their runs at the same moment raced to insert it (UNIQUE constraint failed, a
    sweep trial KILLED in CI). Each of them logs it now, and the experiment holds one row."""
    import threading

    client = MlflowClient(server)
    exp = client.create_experiment(f"dataset-race-{time.time_ns()}")
    files = describe_splits("fashion_mnist").files
    runs = [client.create_run(exp).info.run_id for _ in range(8)]
    start, errors = threading.Barrier(len(runs)), []

    def log(run_id):
        start.wait()
        try:
            log_dataset(client, run_id, "fashion_mnist", files)
        except Exception as err:  # noqa: BLE001 (collected: the test's assertion names them)
            errors.append(err)

    threads = [threading.Thread(target=log, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    digests = {client.get_run(r).inputs.dataset_inputs[0].dataset.digest for r in runs}
    assert digests == {files.digest}
