"""What logging the job's models as MLflow Models (``mlflow.log_model``) costs a tiny job.

    .venv/bin/python benchmarks/bench_model_logging.py [--repeats 3]

The job: the tests' tiny job (``tests/helpers.py`` TINY: `adcs train` of configs/quickstart.yaml
on 384 Fashion-MNIST images, 2 epochs of small_cnn with PGD-2, in the adcs process), with
``mlflow.log_model`` on and off, alternated run by run (so that a noisy neighbour hurts both
alike), each in a fresh MLflow store. With it on, the job logs two models (``model`` and
``best_model``: ``torch.export``, the robustness card, MLflow's checks of the input example and
of the requirements). Per run: the command's wall time. The table gives medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
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


def run_job(log_model: bool, tmp: Path) -> tuple[float, float | None]:
    """The command's wall time and, with the models logged, the run's ``time_model_log_s``."""
    sets = [*JOB, f"mlflow.log_model={str(log_model).lower()}", f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
            f"train.output_dir={tmp / 'runs'}"]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "distributed_adcs.cli", "train", "--config",
                           str(ROOT / "configs/quickstart.yaml"), *[a for s in sets for a in ("--set", s)]],
                          cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the job failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    if log_model and "last model: runs:/" not in proc.stdout:
        raise SystemExit(f"the job logged no model:\n{proc.stdout[-2000:]}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return wall, run.data.metrics.get("time_model_log_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(header("model logging overhead: a tiny in-process job with mlflow.log_model on and off", args.repeats))
    times: dict[bool, list[float]] = {True: [], False: []}
    logging: list[float] = []
    for i in range(args.repeats):
        for on in ((False, True) if i % 2 == 0 else (True, False)):
            with tempfile.TemporaryDirectory() as tmp:
                wall, logged = run_job(on, Path(tmp))
            times[on].append(wall)
            if logged is not None:
                logging.append(logged)
            print(f"# repeat {i + 1}: log_model={str(on).lower()} {wall:.1f} s"
                  + (f" (of which logging the models {logged:.1f} s)" if logged is not None else ""), flush=True)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    rows = [{"mlflow.log_model": "false", "median wall s": off, "runs s": " ".join(f"{t:.1f}" for t in times[False])},
            {"mlflow.log_model": "true", "median wall s": on, "runs s": " ".join(f"{t:.1f}" for t in times[True])}]
    print(table(rows, ["mlflow.log_model", "median wall s", "runs s"]))
    print(f"# ratio of medians (on / off): {on / off:.2f}; the difference: {on - off:.1f} s")
    print(f"# the logging step itself (time_model_log_s), median: {statistics.median(logging):.1f} s, "
          f"{statistics.median(logging) / off:.1%} of the median job without it")


if __name__ == "__main__":
    main()
