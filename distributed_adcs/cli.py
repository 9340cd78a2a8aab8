"""The ``adcs`` command line. Bad input exits with code 2 and one line on stderr.

    adcs train --config configs/quickstart.yaml --set train.epochs=2
    adcs evaluate --checkpoint runs/<run_id>/last.pt --set eval.autoattack=true
    adcs evaluate --model models:/<registered name>/<version>
    adcs sweep --config configs/sweep_quickstart.yaml
    adcs ui
    adcs data export --dataset fashion_mnist --out data/fmnist_parquet
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from typing import Callable, Sequence

from .config import UsageError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (dotted, value parsed as YAML); repeatable, "
                        "e.g. --set objective.epsilon=0.1 --set coreset.method=craig")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 1..65535, got {text!r}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adcs", description="Adversarial coreset training on Ray, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="run a training job (full-data or coreset adversarial training)",
                       description="Run one training job, tracked as one MLflow run.")
    p.add_argument("--config", metavar="FILE", help="YAML config (see configs/); defaults apply to missing keys")
    p.add_argument("--resume", metavar="RUN_ID_OR_PATH",
                   help="continue a job from its last checkpoint: an MLflow run id, a checkpoint file or directory")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and Ray Train's own output on the console (default: in the run's log file, "
                        "also MLflow artifact logs/adcs.log)")
    _common(p)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint, an MLflow run's final model or a logged MLflow Model",
                       description="Clean, PGD-k and (with --set eval.autoattack=true) AutoAttack test accuracy.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="PATH", help="a checkpoint file written by adcs train")
    src.add_argument("--run", metavar="RUN_ID", help="an MLflow run of adcs train; results are logged to it")
    src.add_argument("--model", metavar="URI", help="an MLflow Model logged by adcs train: models:/NAME/VERSION "
                                                   "(a registered one) or runs:/RUN_ID/model")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI for --run and --model (default: ./mlflow.db)")
    _common(p)

    p = sub.add_parser("sweep", help="run a Ray Tune sweep of training jobs",
                       description="A Ray Tune search over job config keys (grid or random, ASHA on validation "
                                   "robust accuracy); every trial is a whole job, nested under one MLflow run.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="FILE", help="sweep YAML, e.g. configs/sweep_quickstart.yaml")
    src.add_argument("--resume", metavar="DIR", help="continue a killed sweep: its Tune experiment directory, "
                                                     "which the sweep printed when it started")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and Ray Tune's own output on the console (default: in a log file under the "
                        "sweep's train.output_dir)")

    p = sub.add_parser("ui", help="serve the MLflow UI for the local store on 127.0.0.1",
                       description="Start `mlflow ui` on the run store (default ./mlflow.db), bound to 127.0.0.1 only.")
    p.add_argument("--tracking-uri", metavar="URI", help="store to show (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--port", type=_port, default=5000, help="port (default 5000)")
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser("data", help="dataset utilities", description="Dataset utilities.")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    e = dsub.add_parser("export", help="export a registered dataset to Parquet",
                        description="Write a registered dataset's train and test splits as Parquet files "
                                    "that `data.name: parquet` reads back.")
    e.add_argument("--dataset", required=True, help="registered dataset name, e.g. fashion_mnist")
    e.add_argument("--out", required=True, metavar="DIR", help="output directory, or a URI such as s3://bucket/fmnist")
    e.add_argument("--root", help="where the source dataset lives (default: its usual place)")
    e.add_argument("--download", action="store_true", help="let torchvision download the source dataset")
    e.add_argument("--encoding", choices=["png", "array"], default="png", help="image column format")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.config, args.overrides)  # every config error before torch, Ray or MLflow loads
    from .engine.runtime import raise_on_sigterm
    from .run import train

    raise_on_sigterm()  # this command owns its process: a SIGTERM marks the run KILLED, as Ctrl-C does
    return _captured(args.verbose, cfg.train.output_dir, lambda: train(cfg, resume=args.resume))


def _captured(verbose: bool, output_dir: str, job: Callable[[], object]) -> int:
    """Run ``job`` with Ray's and Train's output in a log file (``console.capture``), unless
    ``verbose``; a failure that is not bad input is one line naming that log."""
    if verbose:
        job()
        return 0
    from . import console

    with console.capture(console.job_log_dir(output_dir)) as first_path:
        try:
            job()
        except UsageError:
            raise
        except Exception as err:
            if isinstance(err, OSError) and err.errno in _DISK_ERRORS:
                raise  # main names the file
            traceback.print_exc()  # into the log
            raise JobFailed(f"{_one_line(err)}{_hint(err)}; the traceback is in {console.log_path() or first_path}") from None
    return 0


class JobFailed(Exception):
    """A job that failed for a reason other than its input: one line here, the traceback in its log."""


def _hint(err: BaseException) -> str:
    """What to do about a failure the user can act on."""
    if "database is locked" in str(err):  # sqlite takes one writer at a time, waiting 5 s for it
        return (" (a sqlite MLflow store serialises its writers; for many jobs writing at once, run an "
                "MLflow server and set mlflow.tracking_uri=http://HOST:PORT, see cluster/README.md)")
    return ""


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .config import check_overrides

    check_overrides(args.overrides)  # what they name and their types, before torch loads
    if args.run or args.model:
        _check_store(args.tracking_uri, must_exist=True)
    from .evaluation import evaluate

    results = evaluate(checkpoint=args.checkpoint, run_id=args.run, model=args.model, tracking_uri=args.tracking_uri,
                       overrides=args.overrides)
    for k, v in results.items():
        print(f"{k}={v:.4f}")
    return 0


def _check_store(uri: str | None, must_exist: bool) -> str:
    """The resolved tracking URI; a local sqlite store that must exist and does not is an error."""
    from .tracking.stores import resolve_tracking_uri

    uri = resolve_tracking_uri(uri)
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    if must_exist and path is not None and not os.path.isfile(path):
        raise UsageError(f"no MLflow store at {path}: run `adcs train` first or pass --tracking-uri")
    return uri


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import export_parquet

    try:
        paths = export_parquet(args.dataset, args.out, root=args.root, download=args.download, encoding=args.encoding)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    except OSError as err:  # a full disk, a file where a directory should be, ...
        reason = err.strerror or str(err).splitlines()[0]
        raise UsageError(f"cannot write {err.filename or args.out}: {reason}") from None
    for path in paths:
        print(path)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep_config import load_sweep

    if args.resume:
        from .distributed.sweep import resume_sweep
        from .run import train

        # the log next to the sweep's Tune experiment, inside its train.output_dir
        return _captured(args.verbose, os.path.dirname(os.path.abspath(args.resume)),
                         lambda: resume_sweep(args.resume, train))
    sweep, base = load_sweep(args.config)  # every sweep and search-space error before Ray loads
    from .distributed.sweep import run_sweep
    from .engine.runtime import raise_on_sigterm
    from .run import train

    raise_on_sigterm()  # as adcs train: a SIGTERM ends the sweep as Ctrl-C does
    output_dir = sweep.set.get("train.output_dir") or (base.get("train") or {}).get("output_dir") or "runs"
    return _captured(args.verbose, output_dir, lambda: run_sweep(args.config, train))


def _cmd_ui(args: argparse.Namespace) -> int:
    import shutil
    import socket

    uri = _check_store(args.tracking_uri, must_exist=True)
    with socket.socket() as probe:  # mlflow ui would log a traceback-like error and exit 1
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError as err:
            raise UsageError(f"port {args.port} on 127.0.0.1 is in use ({err.strerror}): pass --port") from None
    mlflow = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port}", flush=True)
    env = {**os.environ}
    # MLflow's server-side job execution (GenAI scorers and periodic tasks) starts a job runner
    # and seven huey consumers beside the UI; viewing training runs uses none of them
    env.setdefault(SERVER_JOBS_ENV, "false")
    os.execve(mlflow, [mlflow, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(args.port)], env)
    return 0  # not reached


# the machine's, not the program's, fault: a full disk or a directory it may not write
_DISK_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES}

SERVER_JOBS_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"  # (cluster/mlflow-server.yaml sets it too)
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
    except JobFailed as err:
        print(f"adcs {args.command}: failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM during a job (engine.runtime.Interrupted)
        print(f"adcs {args.command}: {getattr(err, 'message', 'interrupted (SIGINT)')}", file=sys.stderr)
        return 128 + getattr(err, "signum", 2)
    except OSError as err:
        if err.errno not in _DISK_ERRORS:
            raise
        print(f"adcs {args.command}: error: {err.filename or 'a file'}: {err.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
