"""Embedding phase with 2 Ray actors against 1 on the same shards (target: >= 1.8x faster).

    .venv/bin/python benchmarks/bench_actors.py [--n 8000] [--repeats 3]

Each actor holds 1 CPU and runs torch with 1 thread; the single-actor baseline runs the same
4 shards serially. The selection phase is timed from the driver (weights to the object store,
4 shard tasks, exact merge and CRAIG greedy), excluding actor start-up (once per job). The
coresets of both runs are compared and must be identical.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, median_time, table  # noqa: E402

from distributed_adcs.config import load_config  # noqa: E402
from distributed_adcs.distributed.actors import actor_pool_selector, start_actors  # noqa: E402
from distributed_adcs.engine.build import load_job_splits, make_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config("configs/quickstart.yaml", [f"data.limit={args.n}", "coreset.method=craig", "selection.num_shards=4",
                                                  "ray.cpus_per_actor=1", "selection.merge=exact"])
    splits = load_job_splits(cfg)
    torch.manual_seed(0)
    model = make_model(cfg, splits)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows, results = [], {}
    for actors in (1, 2):
        c = replace(cfg, ray=replace(cfg.ray, num_actors=actors))
        handles = start_actors(c, splits)
        selector = actor_pool_selector(c, handles, splits.train)
        selector(model, 0)  # warm-up: actors load the weights and allocate
        med, times = median_time(lambda: results.__setitem__(actors, selector(model, 1)), args.repeats)
        rows.append({"actors": actors, "median_s": med, "runs_s": " ".join(f"{t:.2f}" for t in times)})
        handles.kill()
    ray.shutdown()
    same = torch.equal(results[1].positions, results[2].positions) and torch.equal(results[1].weights, results[2].weights)
    print(header(f"selection phase with 1 vs 2 embedding actors, Fashion-MNIST n={len(splits.train)}, 4 shards",
                 args.repeats))
    print(table(rows, ["actors", "median_s", "runs_s"]))
    print(f"speed-up 2 actors vs 1: {rows[0]['median_s'] / rows[1]['median_s']:.2f}x; identical coresets: {same}")


if __name__ == "__main__":
    main()
