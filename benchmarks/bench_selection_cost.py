"""Cost of one selection phase (attack + embeddings + greedy) against one PGD-10 training epoch.

    .venv/bin/python benchmarks/bench_selection_cost.py [--n 10000] [--repeats 3]

Same data (first N Fashion-MNIST training images), same small_cnn (trained for one PGD epoch
first so gradients are not those of a random model), same process and thread count. For every
selection-attack budget (PGD steps) it reports the selection phase as a fraction of the
PGD-10 epoch and how close its CRAIG coreset is to the one chosen with PGD-10 embeddings:
``agreement`` is the facility-location value of the coreset, measured on the PGD-10
embeddings, relative to the PGD-10 coreset's own value (1.0 = as good).

Measured 2026-11-24 on the 2-core build machine (n=10000, 3 repeats): see the table printed at
the end of the run and docs/measurements.md; the default ``coreset.selection_steps`` is the
cheapest budget within the 25% target whose agreement stays within 1% of PGD-10's.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, median_time, table  # noqa: E402

from distributed_adcs.config import load_config  # noqa: E402
from distributed_adcs.coreset import facility_location_value  # noqa: E402
from distributed_adcs.data import iterate_batches, num_batches  # noqa: E402
from distributed_adcs.engine.build import load_job_splits, make_model, make_objective, make_optimizer  # noqa: E402
from distributed_adcs.engine.epoch import train_epoch  # noqa: E402
from distributed_adcs.engine.runtime import generator  # noqa: E402
from distributed_adcs.engine.selection import local_selector  # noqa: E402
from distributed_adcs.engine.shards import embed_shard  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", default="1,2,3,5,10")
    args = ap.parse_args()
    cfg = load_config("configs/quickstart.yaml", [f"data.limit={args.n}", "objective.steps=10", "coreset.method=craig",
                                                  "coreset.fraction=0.3", "selection.num_shards=1"])
    splits = load_job_splits(cfg)
    torch.manual_seed(0)
    model = make_model(cfg, splits)
    opt, sched = make_optimizer(cfg, model)
    objective = make_objective(cfg.objective)
    n = len(splits.train)

    def pgd_epoch():
        batches = iterate_batches(splits.train, cfg.data.batch_size, shuffle=True, generator=generator(0, "b"))
        return train_epoch(model, objective, batches, opt, sched, 0, num_batches(n, cfg.data.batch_size))

    pgd_epoch()  # warm the model (and the allocator) up
    epoch_s, _ = median_time(pgd_epoch, args.repeats)
    rows = []
    ref = embed_shard(model, replace(cfg, coreset=replace(cfg.coreset, selection_steps=10)), splits.train, 0,
                      (0, n), 0, torch.device("cpu")).embeddings
    ref_sel = local_selector(replace(cfg, coreset=replace(cfg.coreset, selection_steps=10)), splits,
                             torch.device("cpu"))(model, 0)
    ref_value = _value(ref, splits.train.labels, ref_sel.positions)
    for steps in [int(s) for s in args.steps.split(",")]:
        c = replace(cfg, coreset=replace(cfg.coreset, selection_steps=steps))
        selector = local_selector(c, splits, torch.device("cpu"))
        result = {}
        sel_s, _ = median_time(lambda: result.__setitem__("s", selector(model, 1)), args.repeats)
        s = result["s"]
        rows.append({"selection_steps": steps, "selection_s": sel_s, "attack_s": s.timings["attack"],
                     "embed_s": s.timings["embed"], "greedy_s": s.timings["greedy"],
                     "fraction_of_pgd10_epoch": sel_s / epoch_s,
                     "agreement": _value(ref, splits.train.labels, s.positions) / ref_value})
    random_pick = local_selector(replace(cfg, coreset=replace(cfg.coreset, method="random")), splits,
                                 torch.device("cpu"))(model, 1)
    rows.append({"selection_steps": "random (baseline)", "selection_s": None,
                 "agreement": _value(ref, splits.train.labels, random_pick.positions) / ref_value})
    print(header(f"selection phase vs one PGD-10 epoch, small_cnn, Fashion-MNIST n={n}, CRAIG 30%", args.repeats))
    print(f"# PGD-10 training epoch: {epoch_s:.2f} s (median)")
    print(table(rows, ["selection_steps", "selection_s", "attack_s", "embed_s", "greedy_s",
                       "fraction_of_pgd10_epoch", "agreement"]))


def _value(emb: torch.Tensor, labels: torch.Tensor, chosen: torch.Tensor) -> float:
    """Sum over classes of the facility-location value of the chosen examples of that class."""
    total = 0.0
    chosen_set = torch.zeros(labels.numel(), dtype=torch.bool)
    chosen_set[chosen] = True
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        local = chosen_set[members].nonzero().flatten()
        total += facility_location_value(emb[members], local)
    return total


if __name__ == "__main__":
    main()
