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
# in the adcs process (Ray tests set ray.* themselves).
TINY = ["data.limit=384", "data.val_size=128", "data.batch_size=64", "data.eval_batch_size=128",
        "objective.steps=2", "eval.val_pgd_steps=2", "eval.pgd_steps=3", "eval.test_limit=128",
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


@contextmanager
def mlflow_server(where: Path, artifacts: str, env: dict | None = None) -> Iterator[str]:
    """``mlflow server`` with a sqlite database in ``where`` and artifacts proxied to
    ``artifacts`` (a directory or a URI such as ``s3://bucket/mlflow``), on a free loopback
    port; yields its URL, and stops the server's whole process group."""
    port = free_port()
    new_store(where / "server.db")  # (kept when the server restarts on it)
    log = where / "mlflow-server.log"
    mlflow = Path(sys.executable).with_name("mlflow")
    with open(log, "w") as err:
        proc = subprocess.Popen([str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
                                 "--backend-store-uri", f"sqlite:///{where / 'server.db'}",
                                 "--serve-artifacts", "--artifacts-destination", artifacts, "--workers", "1"],
                                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, start_new_session=True)  # its own group
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server, its uvicorn workers and its job consumers
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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
