"""The ``adcs`` command line. Bad input exits with code 2 and one line on stderr.

    adcs train --config configs/quickstart.yaml --set train.epochs=2
    adcs evaluate --checkpoint runs/<run_id>/last.pt --set eval.autoattack=true
    adcs sweep --config configs/sweep_quickstart.yaml
    adcs ui
    adcs data export --dataset fashion_mnist --out data/fmnist_parquet
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .config import UsageError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (dotted, value parsed as YAML); repeatable, "
                        "e.g. --set objective.epsilon=0.1 --set coreset.method=craig")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adcs", description="Adversarial coreset training on Ray, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="run a training job (full-data or coreset adversarial training)",
                       description="Run one training job, tracked as one MLflow run.")
    p.add_argument("--config", metavar="FILE", help="YAML config (see configs/); defaults apply to missing keys")
    p.add_argument("--resume", metavar="RUN_ID_OR_PATH",
                   help="continue a job from its last checkpoint: an MLflow run id, a checkpoint file or directory")
    _common(p)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint or an MLflow run's final model",
                       description="Clean, PGD-k and (with --set eval.autoattack=true) AutoAttack test accuracy.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="PATH", help="a checkpoint file written by adcs train")
    src.add_argument("--run", metavar="RUN_ID", help="an MLflow run of adcs train; results are logged to it")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI for --run (default: ./mlflow.db)")
    _common(p)

    p = sub.add_parser("sweep", help="run a Ray Tune sweep of training jobs",
                       description="A Ray Tune search over job config keys (grid or random, ASHA on validation "
                                   "robust accuracy); every trial is a whole job, nested under one MLflow run.")
    p.add_argument("--config", required=True, metavar="FILE", help="sweep YAML, e.g. configs/sweep_quickstart.yaml")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("ui", help="serve the MLflow UI for the local store on 127.0.0.1",
                       description="Start `mlflow ui` on the run store (default ./mlflow.db), bound to 127.0.0.1 only.")
    p.add_argument("--tracking-uri", metavar="URI", help="store to show (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser("data", help="dataset utilities", description="Dataset utilities.")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    e = dsub.add_parser("export", help="export a registered dataset to Parquet",
                        description="Write a registered dataset's train and test splits as Parquet files "
                                    "that `data.name: parquet` reads back.")
    e.add_argument("--dataset", required=True, help="registered dataset name, e.g. fashion_mnist")
    e.add_argument("--out", required=True, metavar="DIR", help="output directory")
    e.add_argument("--root", help="where the source dataset lives (default: its usual place)")
    e.add_argument("--download", action="store_true", help="let torchvision download the source dataset")
    e.add_argument("--encoding", choices=["png", "array"], default="png", help="image column format")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .run import train

    cfg = load_config(args.config, args.overrides)
    train(cfg, resume=args.resume)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    results = evaluate(checkpoint=args.checkpoint, run_id=args.run, tracking_uri=args.tracking_uri,
                       overrides=args.overrides)
    for k, v in results.items():
        print(f"{k}={v:.4f}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import export_parquet

    try:
        paths = export_parquet(args.dataset, args.out, root=args.root, download=args.download, encoding=args.encoding)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    for path in paths:
        print(path)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .distributed.sweep import run_sweep
    from .run import train

    run_sweep(args.config, train)
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    import os
    import shutil

    from .tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
        raise UsageError(f"no MLflow store at {uri[len('sqlite:///'):]}: run `adcs train` first or pass --tracking-uri")
    mlflow = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port}", flush=True)
    os.execv(mlflow, [mlflow, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(args.port)])
    return 0  # not reached


COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "sweep": _cmd_sweep, "ui": _cmd_ui, "data": _cmd_data}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .progress import set_quiet

    set_quiet(args.quiet)
    try:
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"adcs {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
