"""Helpers shared by the tests (imported as ``helpers``; tests/ is not a package)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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


def run_adcs(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real ``adcs`` console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "distributed_adcs.cli", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)


# A tiny real-data job: a few hundred Fashion-MNIST images, 2 epochs of small_cnn with PGD-2,
# in the adcs process (Ray tests set ray.* themselves).
TINY = ["data.limit=384", "data.val_size=128", "data.batch_size=64", "data.eval_batch_size=128",
        "objective.steps=2", "eval.val_pgd_steps=2", "eval.pgd_steps=3", "eval.test_limit=128",
        "train.epochs=2", "coreset.method=full", "ray.num_workers=0", "ray.num_actors=0"]


def tiny_args(tmp_path: Path, mlflow_uri: str, *extra: str) -> list[str]:
    sets = [*TINY, f"mlflow.tracking_uri={mlflow_uri}", f"train.output_dir={tmp_path / 'runs'}", *extra]
    return [a for s in sets for a in ("--set", s)]
