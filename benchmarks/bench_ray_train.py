"""Epoch time through Ray Train (1 worker) against the plain in-process loop, and start-up cost.

    .venv/bin/python benchmarks/bench_ray_train.py [--n 4000] [--epochs 3]

Both runs train the same job (small_cnn, PGD-10, full data) with the same threads (the Ray
worker holds 2 CPUs and sets 2 torch threads). Epoch time is the median of the per-epoch
``train_time_s`` each run logs to MLflow (the training loop alone, validation excluded).
Start-up is ``trainer_startup_s``: from ``TorchTrainer.fit()`` until the worker's training
function runs; it is paid once per job because one trainer runs the whole job.
"""

from __future__ import annotations

import argparse
import statistics
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
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    base = [f"data.limit={args.n}", "coreset.method=full", f"train.epochs={args.epochs}", "objective.steps=10",
            "eval.test_limit=500", f"mlflow.tracking_uri={uri}", f"train.output_dir={tmp / 'runs'}"]
    rows = []
    for label, extra in (("in-process loop", ["ray.num_workers=0"]),
                         ("Ray Train, 1 worker", ["ray.num_workers=1", "ray.cpus_per_worker=2"])):
        t0 = time.perf_counter()
        run_id = train(load_config("configs/quickstart.yaml", [*base, *extra]))
        wall = time.perf_counter() - t0
        client = MlflowClient(uri)
        epochs = [m.value for m in client.get_metric_history(run_id, "train_time_s")]
        startup = client.get_run(run_id).data.metrics.get("trainer_startup_s")
        rows.append({"path": label, "epoch_median_s": statistics.median(epochs), "startup_s": startup,
                     "job_wall_s": wall})
    print(header(f"Ray Train vs in-process epoch, small_cnn PGD-10, Fashion-MNIST n={args.n}", args.epochs))
    print(table(rows, ["path", "epoch_median_s", "startup_s", "job_wall_s"]))
    print(f"Ray Train epoch / in-process epoch: {rows[1]['epoch_median_s'] / rows[0]['epoch_median_s']:.3f}")


if __name__ == "__main__":
    main()
