"""End-to-end wall time of the quickstart with a 30% CRAIG coreset against full adversarial training.

    .venv/bin/python benchmarks/bench_quickstart.py [--set KEY=VALUE ...]

Runs configs/quickstart.yaml twice in one process: as is (CRAIG, fraction 0.3) and with
``coreset.method=full`` (same epochs, model, attack), plus a random 30% subset with the same
schedule as a baseline. Reports wall time, the speed-up, and final clean / PGD-20 test accuracy.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--methods", default="full,craig,random")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    rows = []
    for method in args.methods.split(","):
        cfg = load_config("configs/quickstart.yaml", [*args.overrides, f"coreset.method={method}",
                                                      f"mlflow.tracking_uri={uri}", f"train.output_dir={tmp / 'runs'}"])
        t0 = time.perf_counter()
        run_id = train(cfg)
        wall = time.perf_counter() - t0
        m = MlflowClient(uri).get_run(run_id).data.metrics
        rows.append({"method": method, "wall_s": wall, "test_clean_acc": m["test_clean_acc"],
                     f"test_pgd{cfg.eval.pgd_steps}_acc": m[f"test_pgd{cfg.eval.pgd_steps}_acc"]})
    full = next(r for r in rows if r["method"] == "full")["wall_s"]
    for r in rows:
        r["speedup_vs_full"] = full / r["wall_s"]
    print(header("quickstart end to end: coreset vs full adversarial training, same epochs", 1))
    print(table(rows, list(rows[0].keys())))


if __name__ == "__main__":
    main()
