"""What only a GPU shows, in one table (run by scripts/gpu_check.sh on a CUDA machine).

1. a 2-epoch quickstart on Ray Train with ``ray.use_gpu: true``, fp32 and bf16: epoch times and
   the speed-up;
2. a Train worker killed mid-job (at epoch 1), and the job resuming on the GPU;
3. ``adcs train --resume`` of that run from a fresh process (one more epoch);
4. CRAIG's greedy at n = 100k on the GPU against the CPU (the CPU capped by a time limit).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SETS = ["data.limit=20000", "train.epochs=2", "coreset.warmup_epochs=1", "coreset.every=1", "ray.use_gpu=true",
        "ray.num_workers=1", "ray.cpus_per_worker=4", "eval.test_limit=2000", "data.batch_size=256"]


def adcs(tmp: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "distributed_adcs.cli", *args, "--quiet"]
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=900, stdin=subprocess.DEVNULL)


def train(tmp: Path, *sets: str, env: dict | None = None, resume: str | None = None) -> str:
    args = ["train", "--config", str(ROOT / "configs" / "quickstart.yaml")]
    for s in [*SETS, f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}", f"train.output_dir={tmp / 'runs'}", *sets]:
        args += ["--set", s]
    if resume:
        args += ["--resume", resume]
    proc = adcs(tmp, *args, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"adcs train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout.split("MLflow run ")[1].split()[0]


def metrics(tmp: Path, run_id: str) -> tuple[dict, list[float], list[int]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    run = client.get_run(run_id)
    hist = sorted(client.get_metric_history(run_id, "epoch_time_s"), key=lambda m: m.step)
    steps = [m.step for m in sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)]
    return run.data.metrics | {"status": run.info.status}, [m.value for m in hist], steps


def greedy(n: int, device: str) -> float:
    """Seconds of one CRAIG selection of n // 10 from n embeddings (d = 10) on ``device``."""
    from distributed_adcs.coreset.facility import craig

    emb = torch.randn(n, 10, generator=torch.Generator().manual_seed(0)).to(device)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    craig(emb, n // 10, generator=torch.Generator().manual_seed(0))
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> int:
    smoke = "--cpu-smoke" in sys.argv  # the same steps, tiny, on the CPU (tests/test_gpu_check.py)
    if smoke:
        SETS[:] = [s.replace("ray.use_gpu=true", "ray.use_gpu=false") for s in SETS]
        SETS.extend(["data.limit=384", "data.val_size=128", "objective.steps=2", "eval.val_pgd_steps=2",
                     "eval.pgd_steps=2", "eval.test_limit=128", "ray.cpus_per_worker=1", "data.batch_size=64"])
    else:
        assert torch.cuda.is_available(), "gpu_check needs a CUDA GPU"
    device, n = ("cpu", 4000) if smoke else ("cuda", 100_000)
    rows = [("device", torch.cuda.get_device_name(0) if not smoke else "cpu (smoke)"), ("torch", torch.__version__)]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as d:
        tmp = Path(d)
        times = {}
        # The CPU smoke trains every row in its own process, selecting there too: the same epoch
        # loop and the same commands, without a Ray Train start-up (about 50 CPU-seconds each) or
        # a Ray with two embedding actors. So its fault row kills no worker (the fault hook lives
        # in the Train worker): tests/test_distributed.py kills a Train worker and checks Train's
        # restart, and tests/test_interrupts.py resumes a Ray Train run from a fresh process.
        local = ["ray.num_workers=0", "ray.num_actors=0"] if smoke else []
        for precision in ("fp32", "bf16"):
            t0 = time.perf_counter()
            run = train(tmp, f"train.precision={precision}", f"mlflow.run_name=gpu-{precision}", *local)
            m, epoch_s, _ = metrics(tmp, run)
            times[precision] = statistics.median(epoch_s) if epoch_s else float("nan")
            rows.append((f"quickstart 2 epochs, {precision}",
                         f"{time.perf_counter() - t0:.0f} s wall, epoch {', '.join(f'{t:.1f}' for t in epoch_s)} s, "
                         f"test clean {m.get('test_clean_acc', float('nan')):.4f}, "
                         f"PGD-20 {m.get('test_pgd20_acc', float('nan')):.4f}"))
        rows.append(("bf16 speed-up per epoch", f"{times['fp32'] / times['bf16']:.2f}x"))
        marker = tmp / "worker-died"
        run = train(tmp, "train.epochs=3", "mlflow.run_name=gpu-fault", *local,
                    env={"ADCS_FAULT_WORKER_EXIT_AT_EPOCH": f"1:{marker}"})
        m, _, steps = metrics(tmp, run)
        rows.append(("worker killed at epoch 1, job resumes on the GPU",
                     f"worker died: {marker.exists()}, run {m['status']}, epochs logged {steps}"))
        resumed = train(tmp, "train.epochs=4", *local, resume=run)
        m, _, steps = metrics(tmp, resumed)
        rows.append(("--resume from a fresh process (to 4 epochs)",
                     f"same run: {resumed == run}, {m['status']}, epochs logged {steps}"))
    fast, cpu = greedy(n, device), greedy(n, "cpu")
    rows.append((f"CRAIG greedy, n = {n}, k = {n // 10}, d = 10", f"{device} {fast:.1f} s, cpu {cpu:.1f} s "
                                                                  f"({cpu / fast:.1f}x)"))
    width = max(len(k) for k, _ in rows)
    print(f"| {'check'.ljust(width)} | result |\n| {'-' * width} | --- |")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")
    print(json.dumps(dict(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
