"""Data, checkpoints and resume through the S3 protocol, against a real S3 server on loopback
(moto's, standing for the bucket that every node of a cluster reaches): the data set is
exported into the bucket, a Ray Train job reads it from ``s3://`` and keeps its checkpoints
there (Ray Train's ``storage_path``: each epoch's checkpoint is written once, there, and the
run only names it), records to an MLflow server whose artifacts are in the bucket as well, is
SIGKILLed after an epoch, loses its node's disk, and is resumed from another working directory
from the bucket alone, writing nothing into either working directory.

The endpoint reaches pyarrow, Ray Train and boto3 the way it reaches them on a cluster: the
standard ``AWS_ENDPOINT_URL`` and key variables, in the environment of the job (and so of the
local Ray it starts) and of the MLflow server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import boto3
import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient

from distributed_adcs.data import load_splits
from distributed_adcs.tracking.job_run import local_checkpoint_dir

from helpers import ROOT, TINY, free_port, mlflow_server, run_adcs

BUCKET = "adcs-test"
DATA = f"s3://{BUCKET}/fmnist"
RUNS = f"s3://{BUCKET}/runs"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port, with one empty bucket."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "adcs", "AWS_SECRET_ACCESS_KEY": "adcs", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except urllib.error.HTTPError:  # any answer: the server is up
                break
            except OSError:
                assert time.time() < deadline, f"no S3 server at {endpoint}: {log.read_text()[-2000:]}"
                time.sleep(0.2)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="adcs",
                              aws_secret_access_key="adcs")
        client.create_bucket(Bucket=BUCKET)
        yield SimpleNamespace(env=env, client=client)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _keys(s3, prefix: str) -> dict[str, int]:
    """The bucket's objects under ``prefix``: key -> size (not pyarrow's ``dir/`` markers)."""
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")}


@pytest.fixture(scope="module")
def s3_data(s3):
    """Fashion-MNIST exported straight into the bucket by ``adcs data export --out s3://...``."""
    done = run_adcs("data", "export", "--dataset", "fashion_mnist", "--out", DATA, "--quiet", env=s3.env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def test_export_writes_the_data_set_into_the_bucket_and_it_reads_back(s3, s3_data, monkeypatch):
    assert s3_data == [f"{DATA}/train-00000-of-00002.parquet", f"{DATA}/train-00001-of-00002.parquet",
                       f"{DATA}/test-00000-of-00001.parquet"]
    assert sorted(_keys(s3, "fmnist/")) == sorted(u.removeprefix(f"s3://{BUCKET}/") for u in s3_data)
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    remote = load_splits("parquet", root=DATA, limit=3000, val_size=100)
    local = load_splits("fashion_mnist", limit=3000, val_size=100)
    assert remote.num_classes == local.num_classes == 10
    for split in ("train", "val", "test"):
        a, b = getattr(remote, split), getattr(local, split)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels), split
    again = run_adcs("data", "export", "--dataset", "fashion_mnist", "--out", DATA, "--quiet", env=s3.env)
    assert again.returncode == 2 and "already holds" in again.stderr  # stale shards are never mixed in


def _wait_for_epoch(client: MlflowClient, step: int, proc: subprocess.Popen, timeout: float = 300) -> str:
    """The run id of the quickstart's run once it has logged epoch ``step``'s train_loss."""
    start = time.time()
    while time.time() - start < timeout:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        exp = client.get_experiment_by_name("quickstart")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and any(m.step >= step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")):
            return runs[0].info.run_id
        time.sleep(1)
    raise TimeoutError("no epoch logged")


def test_ray_train_job_on_s3_resumes_from_the_bucket_alone_in_another_directory(s3, s3_data, tmp_path):
    """The cluster's shape: an MLflow server whose proxied artifacts live in the bucket too. Node
    b's driver is SIGKILLed mid-job (with its Ray): a resume from the bucket alone, elsewhere."""
    node_b, elsewhere = tmp_path / "node-b", tmp_path / "elsewhere"
    node_b.mkdir()
    elsewhere.mkdir()
    with mlflow_server(tmp_path, f"s3://{BUCKET}/mlflow", env=s3.env) as url:
        sets = [*TINY, "data.name=parquet", f"data.root={DATA}", "train.epochs=3", "coreset.method=craig",
                "coreset.warmup_epochs=1", "coreset.every=1", "ray.num_workers=1", "ray.cpus_per_worker=1",
                "deterministic=true", f"mlflow.tracking_uri={url}", f"train.output_dir={RUNS}"]
        cmd = [sys.executable, "-m", "distributed_adcs.cli", "train", "--config",
               str(ROOT / "configs" / "quickstart.yaml"), "--quiet", *[a for s in sets for a in ("--set", s)]]
        env = {**os.environ, **s3.env}
        proc = subprocess.Popen(cmd, cwd=node_b, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        client = MlflowClient(url)
        try:
            run_id = _wait_for_epoch(client, 1, proc)
        finally:  # node b dies whole: the driver and every process of the Ray it started (a Train
            # controller left alive logs the next epoch after this test has read the run)
            node = [psutil.Process(proc.pid)]
            node += node[0].children(recursive=True)
            for p in node:
                try:
                    p.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(node, timeout=30)
            proc.communicate()
        tags = client.get_run(run_id).data.tags
        assert tags["adcs.checkpoint_dir"] == f"{RUNS}/{run_id}"
        ray_checkpoints = {k for k in _keys(s3, "") if k.endswith("/last.pt")}
        # the one copy of each checkpoint is Ray Train's, in the bucket (storage_path); the run
        # names the last it recorded, and there is no other copy (in <run dir>/ or in MLflow's artifacts)
        assert ray_checkpoints and all(k.startswith(f"runs/{run_id}/ray/") for k in ray_checkpoints), ray_checkpoints
        assert tags["adcs.checkpoint"].removeprefix(f"s3://{BUCKET}/") in ray_checkpoints
        before = {m.step: m.value for m in client.get_metric_history(run_id, "train_loss")}
        assert before and max(before) == 1

        # node b is gone, with its disk: only the bucket is left to resume from
        shutil.rmtree(local_checkpoint_dir(RUNS, run_id), ignore_errors=True)

        resumed = subprocess.run([*cmd, "--resume", run_id], cwd=elsewhere, env=env, capture_output=True, text=True,
                                 timeout=900, stdin=subprocess.DEVNULL)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run_id, "train_loss")
        # each epoch once, wherever the node died (the resume records the metrics of a checkpoint
        # that reached the bucket before they reached MLflow)
        assert sorted(m.step for m in history) == [0, 1, 2]
        assert {m.step: m.value for m in history if m.step in before} == before  # epochs 0 and 1 from the bucket
        assert client.get_metric_history(run_id, "test_clean_acc")
        coresets = [a.path for a in client.list_artifacts(run_id, "coresets")]
        assert coresets == ["coresets/coreset_epoch001.parquet", "coresets/coreset_epoch002.parquet"]
        assert any("/artifacts/coresets/" in k for k in _keys(s3, "mlflow/"))  # in the bucket through the server
        after = {k for k in _keys(s3, "") if k.endswith("/last.pt")}
        assert all(k.startswith(f"runs/{run_id}/ray/") for k in after), after
        named = client.get_run(run_id).data.tags["adcs.checkpoint"].removeprefix(f"s3://{BUCKET}/")
        if named not in ray_checkpoints:  # the resumed job trained an epoch: its fit replaced the killed one's
            assert named in after and not after & ray_checkpoints, (named, after, ray_checkpoints)
    assert list(node_b.iterdir()) == list(elsewhere.iterdir()) == []  # nothing in either working directory
