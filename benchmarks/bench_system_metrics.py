"""What MLflow's system metrics cost a tiny job: the same job with them off, on at the default
interval (one sample per 30 s) and on at one sample a second, side by side.

    .venv/bin/python benchmarks/bench_system_metrics.py [--repeats 5]

The job: `adcs train` of configs/quickstart.yaml on 384 Fashion-MNIST images, two epochs of full
adversarial training in the adcs process (tests/helpers.py's TINY), a fresh sqlite store each
time: the shape where the monitor's fixed costs (its imports, its thread, its first and last
samples) weigh most. The arms run in turn within each round, each round starting with the
next arm, so that a noisy neighbour and the order hurt all alike; the table gives the medians of the command's wall time, of its CPU time (user +
system, of the process and its children: what the monitor's thread and imports add, less
sensitive than wall time to a busy neighbour) and of the run's training time (its last
`wall_time_s`), and their ratios to the arm without system metrics.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOB = ["data.limit=384", "data.val_size=128", "data.batch_size=64", "data.eval_batch_size=128", "objective.steps=2",
       "eval.val_pgd_steps=2", "eval.pgd_steps=3", "eval.test_limit=128", "train.epochs=2", "coreset.method=full",
       "ray.num_workers=0", "ray.num_actors=0"]
ARMS = {"off": ["mlflow.system_metrics=false"], "on, every 30 s (default)": [],
        "on, every 1 s": ["mlflow.system_metrics_interval_s=1"]}


def run_job(tmp: Path, extra: list[str]) -> dict:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    sets = [*JOB, f"mlflow.tracking_uri={uri}", f"train.output_dir={tmp / 'runs'}", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "distributed_adcs.cli", "train", "--quiet", "--config",
                           str(ROOT / "configs/quickstart.yaml"), *[a for s in sets for a in ("--set", s)]],
                          cwd=tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"the job failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    samples = len(client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage"))
    return {"wall_s": wall, "cpu_s": cpu, "train_s": run.data.metrics["wall_time_s"], "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(header("bench_system_metrics: a tiny in-process job with and without MLflow's system metrics", args.repeats))
    samples: dict[str, list[dict]] = {name: [] for name in ARMS}
    names = list(ARMS)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each arm first in turn
            extra = ARMS[name]
            with tempfile.TemporaryDirectory() as tmp:
                samples[name].append(run_job(Path(tmp), extra))
        print(f"round {r + 1}/{args.repeats}: " + "; ".join(f"{n} {s[-1]['wall_s']:.1f} s" for n, s in samples.items()),
              flush=True)
    timed = ("wall_s", "cpu_s", "train_s")
    base = {k: statistics.median(s[k] for s in samples["off"]) for k in timed}
    rows = []
    for name, runs in samples.items():
        med = {k: statistics.median(s[k] for s in runs) for k in (*timed, "samples")}
        rows.append({"arm": name, **med, **{f"{k[:-2]} ratio": med[k] / base[k] for k in timed}})
    print(table(rows, ["arm", *timed, "samples", "wall ratio", "cpu ratio", "train ratio"]))


if __name__ == "__main__":
    main()
