"""Epoch time through Ray Train (1 worker) against the plain in-process loop, and start-up cost.

    .venv/bin/python benchmarks/bench_ray_train.py [--n 4000] [--epochs 5] [--repeats 2]

Two paths train the same job (small_cnn, PGD-10, full data, 2 torch threads; the Ray worker
holds 2 CPUs): the in-process loop (the baseline, no Ray at all) and Ray Train as shipped. (A
third path, Ray's processes under SCHED_BATCH, halved the preemptions but gained no epoch time,
docs/measurements.md; the option was deleted.) The paths alternate, ``--repeats`` rounds, so that
a noisy neighbour hurts all of them alike. Epoch time is ``train_time_s`` as each run logs it
to MLflow (the training loop alone); the first epoch of every run is dropped (lazy set-up, and
Ray's daemons still starting), and the table gives the median of the rest. ``preempt/s`` is
the mean rate of involuntary context switches of the two busiest threads (the training thread
and its OpenMP helper) over 10 s of the second epoch: how often something else took their core.
Start-up is ``trainer_startup_s`` (``TorchTrainer.fit()`` until the worker's function runs),
paid once per job because one trainer runs the whole job. ``round_ratios`` divides each round's
median epoch by the in-process median of the same round: runs minutes apart share the same
neighbours' load, so the median of these paired ratios is the steadier figure on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, table  # noqa: E402

import psutil  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from distributed_adcs.config import load_config  # noqa: E402
from distributed_adcs.run import train  # noqa: E402

BASELINE = "in-process loop"
PATHS = {  # name: (label, config overrides)
    "baseline": (BASELINE, ["ray.num_workers=0"]),
    "default": ("Ray Train (default)", ["ray.num_workers=1", "ray.cpus_per_worker=2"]),
}


def _switches(pid: int) -> dict[int, tuple[int, int]]:
    """Per thread: (CPU ticks, involuntary context switches)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        nonvol = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
        out[int(tid)] = (int(stat[11]) + int(stat[12]), nonvol)
    return out


def _preemptions(in_process: bool, delay_s: float, out: list) -> None:
    """Involuntary switches/s of the two busiest threads of the training process."""
    deadline = time.time() + 300
    pid = os.getpid() if in_process else None
    while pid is None and time.time() < deadline:
        pid = next((p.pid for p in psutil.process_iter(["cmdline"])
                    if (p.info["cmdline"] or [""])[0].startswith("ray::RayTrainWorker")), None)
        time.sleep(0.5)
    if pid is None:
        return
    time.sleep(delay_s)
    try:
        a = _switches(pid)
        time.sleep(10)
        b = _switches(pid)
    except OSError:
        return
    busiest = sorted((b[t][0] - a[t][0], b[t][1] - a[t][1]) for t in b if t in a)[-2:]
    out.append(sum(n for _, n in busiest) / len(busiest) / 10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    paths = dict(PATHS.values())
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch of every run is dropped)")
    tmp = Path(tempfile.mkdtemp())
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    base = [f"data.limit={args.n}", "coreset.method=full", f"train.epochs={args.epochs}", "objective.steps=10",
            "eval.test_limit=500", f"mlflow.tracking_uri={uri}", f"train.output_dir={tmp / 'runs'}"]
    epochs: dict[str, list[float]] = {p: [] for p in paths}
    rounds: dict[str, list[float]] = {p: [] for p in paths}  # per round: median epoch
    startup: dict[str, list[float]] = {p: [] for p in paths}
    preempt: dict[str, list[float]] = {p: [] for p in paths}
    client = MlflowClient(uri)
    for _ in range(args.repeats):
        for label, extra in paths.items():
            in_process = "ray.num_workers=0" in extra
            # in-process: sample during epoch 2 (data loading takes ~5 s); Ray: 15 s after the worker starts
            sampler = threading.Thread(target=_preemptions, args=(in_process, 12.0 if in_process else 15.0,
                                                                  preempt[label]), daemon=True)
            sampler.start()
            run_id = train(load_config("configs/quickstart.yaml", [*base, *extra]))
            sampler.join(timeout=1)
            history = sorted(client.get_metric_history(run_id, "train_time_s"), key=lambda m: m.step)
            kept = [m.value for m in history[1:]]
            epochs[label] += kept
            rounds[label].append(statistics.median(kept))
            value = client.get_run(run_id).data.metrics.get("trainer_startup_s")
            if value is not None:
                startup[label].append(value)
    base_epoch = statistics.median(epochs[BASELINE])
    rows = []
    for label in paths:
        ratios = [r / b for r, b in zip(rounds[label], rounds[BASELINE])]
        rows.append({"path": label,
                     "epoch_median_s": statistics.median(epochs[label]),
                     "vs_in_process": statistics.median(epochs[label]) / base_epoch,
                     "epochs": " ".join(f"{e:.2f}" for e in epochs[label]),
                     "paired_ratio": statistics.median(ratios),
                     "round_ratios": " ".join(f"{r:.3f}" for r in ratios),
                     "preempt/s": statistics.median(preempt[label]) if preempt[label] else None,
                     "startup_s": statistics.median(startup[label]) if startup[label] else None})
    print(header(f"Ray Train vs in-process epoch, small_cnn PGD-10, Fashion-MNIST n={args.n}, "
                 f"{args.epochs} epochs per run (first dropped)", args.repeats))
    print(table(rows, ["path", "epoch_median_s", "vs_in_process", "paired_ratio", "round_ratios", "preempt/s",
                       "startup_s", "epochs"]))


if __name__ == "__main__":
    main()
