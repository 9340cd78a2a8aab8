"""What a tiny Ray Train job pays before its first batch, against a baseline tree in the same run.

    .venv/bin/python benchmarks/bench_startup.py [--repeats 5] [--baseline-ref COMMIT]

The job: `adcs train` of configs/quickstart.yaml on 512 Fashion-MNIST images, one epoch, full
adversarial training on one Ray Train worker (1 CPU), a fresh local Ray and a fresh MLflow
store each time: the shape where fixed costs are everything. Per run it records the command's
wall time and, from the MLflow run, ``time_startup_s`` (the job asked for until its first epoch
starts: imports, data, the MLflow run, ``ray.init``, the trainer) and ``trainer_startup_s``
(``TorchTrainer.fit()`` until the worker's function runs).

``--baseline-ref`` checks that commit out into a temporary git worktree and runs it in
alternation with this checkout (same venv, ``PYTHONPATH`` pointing at each tree), so that a
noisy neighbour hurts both alike; the table gives medians and the ratio of medians. A Ray-only
reference runs too: ``TorchTrainer.fit()`` of a function that only reports, in a fresh local
Ray, which is what Ray itself costs on this machine whatever the job does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOB = ["data.limit=512", "data.val_size=128", "data.batch_size=64", "objective.steps=2", "eval.val_pgd_steps=2",
       "eval.pgd_steps=3", "eval.test_limit=128", "train.epochs=1", "coreset.method=full",
       "ray.num_workers=1", "ray.cpus_per_worker=1"]

RAY_ONLY = r'''
import json, os, sys, tempfile, time
import ray, ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from distributed_adcs.distributed.local_env import use_local_ray_env
use_local_ray_env()  # as adcs does for the Ray it starts
def report_only(config):
    d = tempfile.mkdtemp()
    json.dump({"started": time.time()}, open(os.path.join(d, "t.json"), "w"))
    ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(d))
t0 = time.time()
ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1",
         log_to_driver=False)
t1 = time.time()
trainer = TorchTrainer(report_only, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                       torch_config=TorchConfig(backend="gloo"), run_config=RunConfig(storage_path=sys.argv[1], name="x"))
result = trainer.fit()
started = json.load(open(os.path.join(result.checkpoint.path, "t.json")))["started"]
print(json.dumps({"ray_init_s": t1 - t0, "trainer_startup_s": started - t1, "fit_s": time.time() - t1}))
ray.shutdown()
'''


def run_job(tree: Path, tmp: Path) -> dict:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    sets = [*JOB, f"mlflow.tracking_uri={uri}", f"train.output_dir={tmp / 'runs'}"]
    env = {**os.environ, "PYTHONPATH": str(tree), "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "distributed_adcs.cli", "train", "--config",
                           str(ROOT / "configs/quickstart.yaml"), *[a for s in sets for a in ("--set", s)]],
                          cwd=tree, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the job failed in {tree}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    metrics = run.data.metrics
    return {"wall_s": wall, "startup_s": metrics["time_startup_s"], "trainer_startup_s": metrics["trainer_startup_s"]}


def run_ray_only(tmp: Path) -> dict:
    import json

    proc = subprocess.run([sys.executable, "-c", RAY_ONLY, str(tmp / "ray")], capture_output=True, text=True,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"the Ray-only reference failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-ref", help="a commit to run in alternation with this checkout")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    print(header("bench_startup: a tiny Ray Train job's fixed costs", args.repeats))
    trees = {"this checkout": ROOT}
    worktree = None
    if args.baseline_ref:
        worktree = Path(tempfile.mkdtemp(prefix="adcs-baseline-"))
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline_ref],
                       check=True, capture_output=True)
        trees = {f"baseline {args.baseline_ref}": worktree, **trees}
    samples: dict[str, list[dict]] = {name: [] for name in [*trees, "Ray only"]}
    try:
        for r in range(args.repeats):
            for name, tree in trees.items():
                with tempfile.TemporaryDirectory() as tmp:
                    samples[name].append(run_job(tree, Path(tmp)))
            with tempfile.TemporaryDirectory() as tmp:
                samples["Ray only"].append(run_ray_only(Path(tmp)))
            print(f"round {r + 1}/{args.repeats}: " + "; ".join(
                f"{n} {s[-1].get('wall_s', s[-1].get('fit_s')):.1f} s" for n, s in samples.items()), flush=True)
    finally:
        if worktree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], capture_output=True)
            shutil.rmtree(worktree, ignore_errors=True)
    rows = []
    for name, runs in samples.items():
        med = {k: statistics.median(s[k] for s in runs) for k in runs[0]}
        rows.append({"tree": name, **med})
    if args.baseline_ref:
        base, ours = rows[0], rows[1]
        rows.append({"tree": "ratio (this / baseline)",
                     **{k: ours[k] / base[k] for k in ("wall_s", "startup_s", "trainer_startup_s")}})
    print(table(rows, ["tree", "wall_s", "startup_s", "trainer_startup_s", "ray_init_s", "fit_s"]))


if __name__ == "__main__":
    main()
