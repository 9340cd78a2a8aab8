"""End-to-end wall time and accuracy of the quickstart's recipe, with coresets on it, against PGD-7.

    .venv/bin/python benchmarks/bench_quickstart.py [--methods full,craig,random] [--set KEY=VALUE ...]

Runs configs/quickstart.yaml in one process, once per coreset method (``full``: the quickstart
as shipped; ``craig`` and ``random`` at its fraction 0.3 and schedule), then the baseline: the
same job with full PGD-7 adversarial training and neither weight averaging nor the guard (the
quickstart before 2026-12-07 trained that, on a CRAIG coreset). Reports wall time, the speed-up
against the baseline, and final clean / PGD-20 test accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, table  # noqa: E402

from mlflow.tracking import MlflowClient  # noqa: E402

from distributed_adcs.config import load_config  # noqa: E402
from distributed_adcs.run import train  # noqa: E402


BASELINE = "full, PGD-7, no averaging, no guard"
PGD7 = ["coreset.method=full", "objective.name=pgd_linf", "objective.params=null", "objective.steps=7",
        "train.ema_decay=null", "guard.enabled=false"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--methods", default="full,craig,random")
    ap.add_argument("--no-baseline", action="store_true", help="skip the full PGD-7 run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    rows = []
    arms = [(method, [f"coreset.method={method}"]) for method in args.methods.split(",")]
    if not args.no_baseline:
        arms.append((BASELINE, PGD7))
    for label, sets in arms:
        cfg = load_config("configs/quickstart.yaml", [*args.overrides, *sets, f"mlflow.tracking_uri={uri}",
                                                      f"train.output_dir={tmp / 'runs'}"])
        t0 = time.perf_counter()
        run_id = train(cfg)
        wall = time.perf_counter() - t0
        m = MlflowClient(uri).get_run(run_id).data.metrics
        rows.append({"arm": label, "wall_s": wall, "test_clean_acc": m["test_clean_acc"],
                     f"test_pgd{cfg.eval.pgd_steps}_acc": m[f"test_pgd{cfg.eval.pgd_steps}_acc"]})
    base = next((r["wall_s"] for r in rows if r["arm"] == BASELINE), None)
    for r in rows:
        r["speedup_vs_pgd7"] = base / r["wall_s"] if base else float("nan")
    print(header("the quickstart end to end: its recipe, coresets on it, and full PGD-7; same epochs", 1))
    print(table(rows, list(rows[0].keys())))


if __name__ == "__main__":
    main()
