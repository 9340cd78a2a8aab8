"""Helpers shared by the tests (imported as ``helpers``; tests/ is not a package)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 right now (held open together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


_STORE_TEMPLATE: Path | None = None


def new_store(path: Path) -> str:
    """A new, empty MLflow sqlite store at ``path`` (its parent is created; a store already there
    is kept), as a tracking URI.

    MLflow builds a new sqlite store by running its whole chain of schema migrations, about 4 s
    of CPU (7 s on a busy machine) every time; the suite makes hundreds. So each test process
    builds one empty store once and copies it: the same file MLflow itself would have made
    (tables at the head revision, the Default experiment). The race of several jobs creating
    one new store at once is what test_concurrent_jobs tests, on a store it leaves to MLflow."""
    import shutil

    global _STORE_TEMPLATE
    if _STORE_TEMPLATE is None:
        import atexit
        import tempfile

        from mlflow.tracking import MlflowClient

        where = Path(tempfile.mkdtemp(prefix="adcs-store-template-"))
        atexit.register(shutil.rmtree, where, True)
        MlflowClient(f"sqlite:///{where / 'mlflow.db'}").search_experiments()  # the migrations, once
        _STORE_TEMPLATE = where / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        shutil.copyfile(_STORE_TEMPLATE, path)
    return f"sqlite:///{path}"


def run_adcs(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real ``adcs`` console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "distributed_adcs.cli", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)


# A tiny real-data job: a few hundred Fashion-MNIST images, 2 epochs of small_cnn with PGD-2,
# in the adcs process (Ray tests set ray.* themselves). The objective, the weight average and
# the guard are pinned, not the quickstart's: what the tests check of the service (Ray, MLflow,
# resume, signals) does not move when the quickstart's recipe does; the recipe's own parts have
# their own tests (test_n_fgsm.py, test_ema.py, test_guard.py).
TINY = ["data.limit=384", "data.val_size=128", "data.batch_size=64", "data.eval_batch_size=128",
        "objective.name=pgd_linf", "objective.params=null", "objective.steps=2", "train.ema_decay=null",
        "guard.enabled=false", "eval.val_pgd_steps=2", "eval.pgd_steps=3", "eval.test_limit=128",
        "train.epochs=2", "coreset.method=full", "ray.num_workers=0", "ray.num_actors=0",
        # logging the models costs a job seconds (torch.export's import, docs/measurements.md): the tests
        # of it turn it on (test_model_logging.py)
        "mlflow.log_model=false"]


class EpochLog:
    """An epoch hook for ``train(callbacks=[...])`` that appends each call to a file, one JSON line
    (epoch, train_loss, the calling process): it works in this process and in a Ray Train
    job's controller alike."""

    def __init__(self, path: Path):
        self.path = str(path)

    def on_epoch(self, epoch: int, metrics: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": epoch, "train_loss": metrics["train_loss"], "pid": os.getpid()}) + "\n")

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in Path(self.path).read_text().splitlines()]


def tiny_args(tmp_path: Path, mlflow_uri: str, *extra: str) -> list[str]:
    sets = [*TINY, f"mlflow.tracking_uri={mlflow_uri}", f"train.output_dir={tmp_path / 'runs'}", *extra]
    return [a for s in sets for a in ("--set", s)]


# the server's environment in cluster/mlflow-server.yaml (test_cluster_specs checks they agree)
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class MlflowServer:
    """``mlflow server`` on a free loopback port (or ``port``), its store ``backend`` (a sqlite file
    of ``where`` by default, or a PostgreSQL URI), artifacts proxied to ``artifacts`` (a directory
    or a URI such as ``s3://bucket/mlflow``). :meth:`kill` and :meth:`start` again: the same
    server restarting on the same port and store (tests/test_postgres_store.py's outage)."""

    def __init__(self, where: Path, artifacts: str, env: dict | None = None, backend: str | None = None):
        self.where, self.artifacts, self.env = where, artifacts, env
        if backend is None:
            new_store(where / "server.db")  # (kept when the server restarts on it)
            backend = f"sqlite:///{where / 'server.db'}"
        self.backend, self.port = backend, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        log = self.where / "mlflow-server.log"
        mlflow = Path(sys.executable).with_name("mlflow")
        with open(log, "a") as err:
            self.proc = subprocess.Popen([str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port),
                                          "--backend-store-uri", self.backend, "--serve-artifacts",
                                          "--artifacts-destination", self.artifacts, "--workers", "1"],
                                         stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **SERVER_ENV, **(self.env or {})},
                                         start_new_session=True)  # its own group
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.kill()
                raise RuntimeError(f"mlflow server did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.5)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server's whole process group (the server, its uvicorn workers and job consumers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@contextmanager
def mlflow_server(where: Path, artifacts: str, env: dict | None = None, backend: str | None = None) -> Iterator[str]:
    """A :class:`MlflowServer` for the block; yields its URL."""
    server = MlflowServer(where, artifacts, env, backend)
    try:
        yield server.start()
    finally:
        server.kill()


POSTGRES_USER = "nobody"  # postgres refuses to run as root: the tests run it as this user


def _postgres_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL not installed: run scripts/get_postgres.sh (Debian: apt-get install postgresql)")
    return str(found[-1])


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL: ``initdb`` in a new temporary directory and ``postgres`` on a free
    loopback port, a child of this process (no system service), stopped and deleted at the end.
    Yields a URI without a database (``postgresql+psycopg://mlflow@127.0.0.1:PORT``, the form
    cluster/mlflow-server.yaml uses: add ``/<name>`` after :func:`create_database`). As root it runs as ``nobody``: postgres refuses root."""
    import shutil
    import tempfile

    as_user: dict = {}
    data = Path(tempfile.mkdtemp(prefix="adcs-postgres-"))
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam(POSTGRES_USER)
        os.chown(data, pw.pw_uid, pw.pw_gid)
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C", "HOME": str(data)}
    port = free_port()
    proc = None
    try:
        subprocess.run([_postgres_bin("initdb"), "-D", str(data / "db"), "-U", "mlflow", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, stdin=subprocess.DEVNULL, env=env, cwd=data,
                       **as_user)
        with open(data / "postgres.log", "w") as log:
            proc = subprocess.Popen([_postgres_bin("postgres"), "-D", str(data / "db"), "-p", str(port),
                                     "-h", "127.0.0.1", "-k", str(data), "-c", "fsync=off", "-c", "max_connections=200"],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=data,
                                    start_new_session=True, **as_user)
        import psycopg

        deadline = time.time() + 60
        while True:
            try:
                psycopg.connect(host="127.0.0.1", port=port, user="mlflow", dbname="postgres").close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"postgres did not come up: {(data / 'postgres.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield f"postgresql+psycopg://mlflow@127.0.0.1:{port}"
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # fast shutdown: end the sessions, stop
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def create_database(cluster: str, name: str) -> str:
    """A new database ``name`` in the :func:`postgres_cluster` at ``cluster``; returns its URI."""
    import psycopg

    host, port = cluster.rsplit("@", 1)[1].split(":")
    with psycopg.connect(host=host, port=int(port), user="mlflow", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{cluster}/{name}"


def _gloo_rank(rank: int, port: int, fn, args: tuple, out) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        out[rank] = fn(rank, *args)
    finally:
        dist.destroy_process_group()


def two_gloo_ranks(fn, *args) -> dict:
    """``fn(rank, *args)`` on 2 real gloo ranks (spawned processes, no Ray): ``{rank: its result}``.
    ``fn`` must be a module-level function of a test module (the children import it)."""
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_gloo_rank, args=(free_port(), fn, args, out), nprocs=2, join=True)
        return dict(out)


def logged_and_saved_logits(mlflow_uri: str, run_id: str, where: Path) -> dict[str, tuple]:
    """``{which: (logits of the run's logged MLflow Model, logits of that model rebuilt from the
    run's last recorded checkpoint)}`` on the same random inputs, for each model the run logged
    (``tracking/model_log.py``: ``model`` and ``best_model``)."""
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    from distributed_adcs.engine.checkpoint import load_checkpoint
    from distributed_adcs.engine.saved_models import checkpoint_shape, saved_models
    from distributed_adcs.tracking.epochs import find_checkpoint
    from distributed_adcs.tracking.model_log import MODEL_NAMES

    payload = load_checkpoint(find_checkpoint(MlflowClient(mlflow_uri), run_id, where))
    models, shape = saved_models(payload), checkpoint_shape(payload)
    x = torch.rand(6, shape.in_channels, shape.image_size, shape.image_size, generator=torch.Generator().manual_seed(0))
    out = {}
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri  # MLflow finds a run's logged models through its global URI
    try:
        with torch.no_grad():
            for which, model in models.items():
                out[which] = (mlflow.pytorch.load_model(f"runs:/{run_id}/{MODEL_NAMES[which]}")(x), model(x))
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return out
class KillServerAt:
    """An epoch hook (``train(callbacks=[...])``) that SIGKILLs a process group (an
    :class:`MlflowServer`'s) after epoch ``epoch`` is recorded, once, and writes ``marker``: a
    tracking server dying in the middle of a job, at a known point. It pickles (a Ray Train
    job runs it in its controller)."""

    def __init__(self, pgid: int, marker: Path, epoch: int = 0):
        self.pgid, self.marker, self.epoch = pgid, str(marker), epoch

    def on_epoch(self, epoch: int, metrics: dict) -> None:
        if epoch == self.epoch and not Path(self.marker).exists():
            os.killpg(self.pgid, signal.SIGKILL)
            Path(self.marker).write_text(str(time.time()))
