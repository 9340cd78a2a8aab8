"""Ray Jobs end to end: a real head from `ray start`, tiny training jobs from `ray job submit`.

The head is private to this module: its own ports, its own ``--temp-dir`` and its own process
group, with the dashboard (Jobs API) on 127.0.0.1. A worker node of no CPUs joins it from this
machine, as a head and worker nodes on one host do: it runs nothing, but its log monitor reads
the same session directory as the head's, so Ray forwards every worker's line to the job's
driver twice (each line that ``adcs train`` printed from Ray Train came twice before the driver
showed each once). Both are stopped by SIGTERM to their ``ray start --block`` processes (which
shut down the processes those commands started), never by ``ray stop``: ``ray stop`` ends every
Ray process of the user on the machine, including the session's shared ``ray.init`` instance
(conftest) and other people's Ray on this shared machine. Teardown then asserts that no process
of this cluster (its process groups, or a raylet/gcs_server under its temp dir) is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from helpers import ROOT, TINY, free_ports, new_store

pytestmark = pytest.mark.ray

# The environment the tests run in (the project's .venv): the head's PATH starts here, so a
# job's `adcs` and `python` resolve to it (a Ray job inherits the head's environment).
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
# Kept out of the working_dir upload (Ray's limit is 500 MB; .venv alone is several GB).
# anchored at the working dir ("/data", not "data": a bare name also drops distributed_adcs/data)
EXCLUDES = ["/.venv", "/runs", "/mlartifacts", "*.db", "/.git", "/data", ".pytest_cache", "__pycache__"]
SUBMIT_TIMEOUT_S = 240


@dataclass
class Head:
    proc: subprocess.Popen
    temp_dir: Path
    dashboard: str  # the Jobs API / dashboard URL, http://127.0.0.1:<port>
    env: dict
    gcs: str = ""  # the GCS address, 127.0.0.1:<port>, that nodes join
    start_s: float = 0.0  # wall time of `ray start` until the Jobs API answered
    workers: list = field(default_factory=list)  # `ray start --block` of each worker node




def _env(dashboard: str) -> dict:
    """Environment for the head and its clients: no inherited RAY_* (e.g. a RAY_ADDRESS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", TQDM_DISABLE="1",
               # Ray processes that look up the State API without an address (Train V2's placement
               # group cleaner) auto-detect the cluster, which fails while another Ray runs here.
               RAY_API_SERVER_ADDRESS=dashboard,
               # No drain on SIGTERM: it waits up to 30 s for a busy node (it is meant for Serve).
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _start_head(temp_dir: Path, timeout_s: float = 90) -> Head:
    gcs, dash, agent, agent_grpc, client, runtime_env, metrics, node_mgr, obj_mgr = free_ports(9)
    # The dashboard (Jobs API) listens on 127.0.0.1 only. Ray resolves a 127.0.0.1 node address to
    # the host's IP, and GCS/raylet listen on all interfaces whatever the flags say.
    cmd = [RAY, "start", "--head", "--block", "--disable-usage-stats", "--num-cpus=2", "--num-gpus=0",
           "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}",
           f"--port={gcs}", f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--ray-client-server-port={client}",
           f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
           f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
           "--min-worker-port=0", "--max-worker-port=0",  # workers bind random free ports
           f"--object-store-memory={256 * 2**20}"]
    dashboard = f"http://127.0.0.1:{dash}"
    env = _env(dashboard)
    log = open(temp_dir / "ray-start.log", "w")
    # A new session makes the head its own process group: nothing else is in it.
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    head = Head(proc, temp_dir, dashboard, env, gcs=f"127.0.0.1:{gcs}")
    deadline = time.monotonic() + timeout_s
    log_path = temp_dir / "ray-start.log"
    # `ray start` logs this once every process (GCS, dashboard, raylet, agents) is up.
    while not ("Ray runtime started" in log_path.read_text() and _http_ok(f"{head.dashboard}/api/jobs/")):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_head(head)
            raise RuntimeError(f"ray start failed:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    return head


def _add_worker_node(head: Head, timeout_s: float = 90) -> None:
    """A worker node of no CPUs on this machine: it shares the head's session directory (its temp
    dir), and its own process group."""
    node_mgr, obj_mgr = free_ports(2)
    log_path = head.temp_dir / f"ray-start-worker{len(head.workers)}.log"
    cmd = [RAY, "start", f"--address={head.gcs}", "--block", "--disable-usage-stats", "--num-cpus=0",
           "--num-gpus=0", f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
           "--min-worker-port=0", "--max-worker-port=0", f"--object-store-memory={128 * 2**20}"]
    with open(log_path, "w") as log:
        head.workers.append(subprocess.Popen(cmd, env=head.env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True))
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in log_path.read_text():
        if head.workers[-1].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start (worker node) failed:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def _head_processes(head: Head) -> list[psutil.Process]:
    """Processes of this cluster: its process groups, plus anything naming its temp dir."""
    groups = {head.proc.pid, *(w.pid for w in head.workers)}
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            in_group = os.getpgid(p.pid) in groups
            mine = in_group or any(str(head.temp_dir) in a for a in p.info["cmdline"] or [])
        except (ProcessLookupError, psutil.Error):
            continue
        if mine and p.pid != os.getpid():
            found.append(p)
    return found


def _core_names(procs: list[psutil.Process]) -> set[str]:
    names = set()
    for p in procs:
        try:
            names.add(p.name())
        except psutil.Error:
            pass
    return names & {"raylet", "gcs_server"}


def _stop_head(head: Head, grace_s: float = 30) -> list[str]:
    """SIGTERM the worker nodes' and then the head's `ray start --block`, wait, SIGKILL leftovers;
    return what was left over."""
    for proc in [*head.workers, head.proc]:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
    _, alive = psutil.wait_procs(_head_processes(head), timeout=10)
    leftovers = []
    for p in alive:
        try:
            leftovers.append(f"{p.pid} {p.name()}")
            p.kill()
        except psutil.Error:
            pass
    for proc in [*head.workers, head.proc]:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return leftovers


@pytest.fixture(scope="module")
def ray_head():
    # Short path: Ray's Unix sockets live under the temp dir (the socket path limit is 107 bytes).
    temp_dir = Path(tempfile.mkdtemp(prefix="adcs-rayjobs-", dir="/tmp"))
    started = time.perf_counter()
    head = _start_head(temp_dir)
    head.start_s = time.perf_counter() - started
    try:
        _add_worker_node(head)
        assert _core_names(_head_processes(head)) == {"raylet", "gcs_server"}  # the check below can see them
        yield head
    finally:
        leftovers = _stop_head(head)
        remaining = _head_processes(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftovers, f"processes survived SIGTERM to the head: {leftovers}"
    assert not _core_names(remaining) and not remaining, f"head processes remain: {remaining}"


def _submit(head: Head, tmp_path: Path, extra: list[str]) -> tuple[str, float, str]:
    """`ray job submit` (blocking) a tiny training job; return (submission id, wall s, CLI output)."""
    job_id = f"adcs-test-{tmp_path.name}-{int(time.time())}"
    sets = [*TINY, f"mlflow.tracking_uri={new_store(tmp_path / 'mlflow.db')}",
            f"train.output_dir={tmp_path / 'runs'}", "ray.address=auto", *extra]
    cmd = [RAY, "job", "submit", "--address", head.dashboard, "--submission-id", job_id,
           "--working-dir", str(ROOT), "--runtime-env-json", json.dumps({"excludes": EXCLUDES}),
           "--", "adcs", "train", "--config", "configs/quickstart.yaml",
           *[a for s in sets for a in ("--set", s)], "--quiet"]
    started = time.perf_counter()
    try:
        out = subprocess.run(cmd, env=head.env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=SUBMIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        subprocess.run([RAY, "job", "stop", "--address", head.dashboard, job_id], env=head.env,
                       capture_output=True, timeout=60)
        raise
    return job_id, time.perf_counter() - started, out.stdout + out.stderr


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _assert_succeeded(head: Head, job_id: str, cli_output: str) -> None:
    """Check the job's record in the head's Jobs REST API (what `ray job status` prints)."""
    try:
        info = _get_json(f"{head.dashboard}/api/jobs/{job_id}")
    except urllib.error.HTTPError:
        pytest.fail(f"no job {job_id} on the head; ray job submit said:\n{cli_output[-3000:]}")
    if info["status"] != "SUCCEEDED":
        logs = _get_json(f"{head.dashboard}/api/jobs/{job_id}/logs")["logs"]
        pytest.fail(f"job {job_id} {info['status']}: {info.get('message')}\n{logs[-4000:]}")


def _finished_run(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    assert experiment is not None, "the job created no MLflow experiment"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert "test_clean_acc" in run.data.metrics
    assert (tmp_path / "runs" / run.info.run_id / "last.pt").is_file()
    return run


def _report(capsys, head: Head, label: str, wall: float) -> None:
    with capsys.disabled():
        print(f"\n{label}: ray job submit wall time {wall:.1f} s (head started in {head.start_s:.1f} s)")


def _assert_each_line_once(cli_output: str, epochs: int = 2) -> None:
    """What the job printed reaches the submitting client once: each epoch's line, the test
    metrics' line and the header."""
    lines = cli_output.splitlines()
    for start in [*(f"epoch {e}/{epochs} " for e in range(1, epochs + 1)), "test_clean_acc=", "adcs train: "]:
        assert sum(line.startswith(start) for line in lines) == 1, f"{start!r} not once in:\n{cli_output[-3000:]}"


def test_submitted_job_trains_and_logs_a_finished_mlflow_run(ray_head, tmp_path, capsys):
    # ray.num_workers 0: the job trains in its driver process and needs no Ray of its own.
    job_id, wall, cli_output = _submit(ray_head, tmp_path, [])
    _report(capsys, ray_head, "in-driver job", wall)
    _assert_succeeded(ray_head, job_id, cli_output)
    run = _finished_run(tmp_path)
    assert run.data.params["ray.num_workers"] == "0"
    _assert_each_line_once(cli_output)


def _actor_classes(head: Head) -> set[str]:
    """Class names of every actor this head has run (Ray's State API, served by its dashboard)."""
    payload = _get_json(f"{head.dashboard}/api/v0/actors?limit=1000&detail=1")
    return {a["class_name"] for a in payload["data"]["result"]["result"]}


def test_submitted_coreset_job_runs_ray_train_on_a_cluster_sized_for_one_phase(ray_head, tmp_path, capsys):
    # ray.address=auto: Ray Train's worker must start on this head. The reported deadlock: a head
    # of exactly 2 CPUs, a Train worker of 2 CPUs and 2 embedding actors of 1 CPU each. The actors
    # held their CPUs for the whole job, Train waited 60 s for its worker and retried forever. Now
    # the workers run the selections: the job needs 2 CPUs. max_failures 0: a broken job fails
    # once instead of after three worker-group starts. (One job for both: a plain 1-worker Ray
    # Train job submitted here checked nothing this one does not.)
    overrides = ["coreset.method=craig", "coreset.warmup_epochs=1", "coreset.every=1", "ray.num_workers=1",
                 "ray.cpus_per_worker=2", "ray.num_actors=2", "ray.cpus_per_actor=1", "ray.max_failures=0"]
    job_id, wall, cli_output = _submit(ray_head, tmp_path, overrides)
    _report(capsys, ray_head, "Ray Train coreset job on a cluster sized for one phase", wall)
    _assert_succeeded(ray_head, job_id, cli_output)
    run = _finished_run(tmp_path)
    assert run.data.params["ray.num_workers"] == "1"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [a.path for a in client.list_artifacts(run.info.run_id, "coresets")] == [
        "coresets/coreset_epoch001.parquet"]
    actors = _actor_classes(ray_head)
    assert "RayTrainWorker" in actors, "Ray Train did not run on the submitted head"
    assert "EmbeddingWorker" not in actors
    logs = _get_json(f"{ray_head.dashboard}/api/jobs/{job_id}/logs")["logs"]
    assert "Found multiple active Ray instances" not in logs  # Train's State API calls found this head
    # the epoch and test lines come from Ray Train's processes, forwarded by both nodes' log monitors
    _assert_each_line_once(cli_output)


def test_request_that_can_never_fit_fails_at_once_with_one_line(ray_head, tmp_path, capsys):
    overrides = ["ray.num_workers=2", "ray.cpus_per_worker=2", "ray.max_failures=0"]
    job_id, wall, cli_output = _submit(ray_head, tmp_path, overrides)
    _report(capsys, ray_head, "a request that can never fit, until the job FAILED", wall)
    assert wall < 120
    info = _get_json(f"{ray_head.dashboard}/api/jobs/{job_id}")
    assert info["status"] == "FAILED"
    logs = _get_json(f"{ray_head.dashboard}/api/jobs/{job_id}/logs")["logs"]
    errors = [line for line in logs.splitlines() if line.startswith("adcs train: error:")]
    assert len(errors) == 1, logs[-3000:]
    assert "needs 2 Ray Train workers of {CPU: 2} each ({CPU: 4} in all)" in errors[0]
    assert "the cluster has {CPU: 2}" in errors[0]
    assert "Traceback" not in logs
