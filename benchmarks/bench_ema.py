"""Choose ``train.ema_decay`` on the validation split (issue 24, section 1).

One PGD-7 training run per seed (small_cnn, the first ``--limit`` Fashion-MNIST training
images, full data, the quickstart's optimiser and cosine schedule over ``--epochs``) carries a
weight average per decay at once: the averages never feed back into training, so every decay
sees the same optimiser steps that a run with only that decay would take, for the cost of one
run. After every epoch each average and the raw weights ("off") are validated like
``Job.validate`` (PGD-``eval.val_pgd_steps`` on the validation split, the same seeded attack for
all). Never the test set.

    nice python benchmarks/bench_ema.py            # 1 seed x 6 epochs: ~8 CPU minutes
    python benchmarks/bench_ema.py --epochs 1 --seeds 0 --limit 1000   # a smoke run

Prints a markdown table (docs/measurements.md has the one it gave) and writes it as JSON
with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from distributed_adcs.config import eval_threat, load_config
from distributed_adcs.engine.build import load_job_splits
from distributed_adcs.engine.ema import WeightAverage
from distributed_adcs.engine.job import Job
from distributed_adcs.engine.runtime import generator, seed_everything
from distributed_adcs.accuracy import clean_accuracy, robust_mask

DECAYS = (0.95, 0.98, 0.99)  # with the (1+t)/(10+t) warm-up a decay d takes effect after (10d-1)/(1-d)
# steps (170, 440, 890): at 79 steps an epoch a short run cannot tell 0.995 from 0.999 from 0.99
CPU = torch.device("cpu")


def one_seed(seed: int, epochs: int, limit: int, val_from: int, *, decays: tuple[float, ...] = DECAYS,
             config: str = "configs/quickstart.yaml", overrides: tuple[str, ...] = ()) -> dict[str, list[dict[str, float]]]:
    """Per arm ("off" or a decay), one row per validated epoch (from ``val_from``): val clean and
    robust accuracy."""
    cfg = load_config(config, [
        f"seed={seed}", f"data.limit={limit}", "coreset.method=full", f"train.epochs={epochs}",
        "ray.num_workers=0", "ray.num_actors=0", *overrides, f"train.ema_decay={decays[0]}", "eval.keep_best=false"])
    splits = load_job_splits(cfg, evaluates=False)
    seed_everything(seed)
    job = Job(cfg, splits, CPU)
    others = [WeightAverage(job.model, d) for d in decays[1:]]
    first = job.ema.update

    def update_all() -> None:  # every average takes the same optimiser steps of this one run
        first()
        for avg in others:
            avg.update()

    job.ema.update = update_all  # the job passes job.ema.update to train_epoch at each epoch
    arms = {"off": job.model, **{str(d): a.model for d, a in zip(decays, [job.ema, *others])}}
    norm, eps = eval_threat(cfg)
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in arms}
    for epoch in range(epochs):
        t0 = time.perf_counter()
        job.run_epoch(epoch)
        if epoch < val_from:
            continue
        batches = job._batches(splits.val)
        for name, model in arms.items():
            mask = robust_mask(model, batches, norm=norm, epsilon=eps, steps=cfg.eval.val_pgd_steps,
                               generator=generator(seed, "val", epoch))
            rows[name].append({"epoch": epoch, "val_clean_acc": clean_accuracy(model, batches),
                               "val_robust_acc": int(mask.sum()) / mask.numel()})
        print(f"seed {seed} epoch {epoch}: {time.perf_counter() - t0:.0f} s, val robust "
              + ", ".join(f"{k} {v[-1]['val_robust_acc']:.3f}" for k, v in rows.items()), flush=True)
    return rows


def choose(results: dict[int, dict[str, list[dict[str, float]]]], last: int = 5) -> str:
    """The arm ("off" or a decay) with the best validation robust accuracy, mean over seeds and
    the last ``last`` validated epochs (one epoch's 1,000 images move by a point or two)."""
    def score(arm: str) -> float:
        vals = [r["val_robust_acc"] for s in results for r in results[s][arm][-last:]]
        return sum(vals) / len(vals)

    return max(results[next(iter(results))], key=score)


def table(results: dict[int, dict[str, list[dict[str, float]]]]) -> str:
    seeds = sorted(results)
    lines = ["| decay | val robust, last epoch (per seed) | mean | best epoch's val robust (mean) | val clean, last (mean) |",
             "| --- | --- | --- | --- | --- |"]
    for arm in results[seeds[0]]:
        last = [results[s][arm][-1]["val_robust_acc"] for s in seeds]
        best = [max(r["val_robust_acc"] for r in results[s][arm]) for s in seeds]
        clean = [results[s][arm][-1]["val_clean_acc"] for s in seeds]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        lines.append(f"| {arm} | {', '.join(f'{x:.3f}' for x in last)} | {mean(last):.3f} | {mean(best):.3f} | {mean(clean):.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--val-from", type=int, default=4, help="validate from this epoch on (validation of "
                    "every arm costs about half a training epoch)")
    ap.add_argument("--limit", type=int, default=10_000)
    ap.add_argument("--decays", type=float, nargs="+", default=list(DECAYS))
    ap.add_argument("--out", default=None, help="write the per-epoch rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    results = {s: one_seed(s, args.epochs, args.limit, min(args.val_from, args.epochs - 1), decays=tuple(args.decays))
               for s in args.seeds}
    print(f"\n{args.limit} training images, {args.epochs} epochs, seeds {args.seeds}, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print(table(results))
    print(f"\nbest by validation (mean of the last 5 validated epochs): {choose(results)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({str(k): v for k, v in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()
