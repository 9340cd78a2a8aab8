"""The Python API: train, evaluate and load models from a script or a notebook.

    import distributed_adcs as adcs

    cfg = adcs.load_config("configs/quickstart.yaml", ["train.epochs=3"])
    run = adcs.train(cfg)                       # a Run: id, status, final metrics, where MLflow has it
    model = adcs.load_model(run)                # the trained torch model, on the CPU, in eval mode
    adcs.evaluate(run, overrides=["eval.autoattack=true"])

The same jobs as ``adcs train`` and ``adcs evaluate``, and the caller's process is left as it
was found: no signal handler stays installed (``adcs`` turns SIGTERM into a KILLED run; here a
Ctrl-C still does), the global random streams and torch's deterministic mode are put back, and
Ray's own output goes to the run's log (``Run.log``, also the MLflow artifact ``logs/adcs.log``)
unless ``verbose=True``. Progress bars show on a terminal and, where Jupyter runs, as notebook
bars.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from . import console
from .config import JobConfig, UsageError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Run:
    """A finished training job, as MLflow recorded it.

    Attributes:
        run_id: the MLflow run (``adcs train --resume``, ``adcs evaluate --run`` and
            :func:`evaluate` / :func:`load_model` take it).
        experiment: the MLflow experiment's name.
        status: the run's MLflow status (``FINISHED``: a job that fails raises instead).
        metrics: the last value of every metric of the run, the final test metrics
            (``test_clean_acc``, ``test_pgd20_acc``, ...) among them.
        artifact_uri: where the run's artifacts are (checkpoints, coresets, plots, logs).
        tracking_uri: the MLflow store, e.g. for ``mlflow.MlflowClient(run.tracking_uri)``.
        log: Ray's and Ray Train's output for this job (None with ``verbose=True``: it went to the console).
    """

    run_id: str
    experiment: str
    status: str
    metrics: dict[str, float] = field(repr=False)
    artifact_uri: str
    tracking_uri: str
    log: Path | None = None

    @classmethod
    def of(cls, run_id: str, tracking_uri: str | None, log: Path | None = None) -> "Run":
        """The run ``run_id`` of the store ``tracking_uri`` (None: ``./mlflow.db``)."""
        from .tracking import RunTracker

        tracker = RunTracker(tracking_uri, None, run_id=run_id)
        run = tracker.client.get_run(run_id)
        experiment = tracker.client.get_experiment(run.info.experiment_id).name
        return cls(run_id, experiment, run.info.status, dict(run.data.metrics), run.info.artifact_uri, tracker.uri, log)


@contextmanager
def _as_found() -> Iterator[None]:
    """The caller's signal handlers, random streams and torch modes, put back on exit."""
    from .engine.runtime import global_state_kept, signal_handlers_kept

    with signal_handlers_kept(), global_state_kept():
        yield


def train(config: JobConfig, *, resume: str | None = None, verbose: bool = False) -> Run:
    """Run one training job (what ``adcs train`` runs) and return its MLflow run.

    Args:
        config: the job, e.g. from :func:`load_config`.
        resume: an MLflow run id (or a checkpoint path) to continue, as ``adcs train --resume``.
        verbose: show Ray's and Ray Train's own output here instead of in the run's log.

    Raises:
        UsageError: bad input (a config that cannot run, a store or cluster that does not answer).
        KeyboardInterrupt: Ctrl-C; the run is marked KILLED, continue it with ``resume``.
    """
    if not isinstance(config, JobConfig):
        raise UsageError(f"train needs a JobConfig (adcs.load_config(...)), got {type(config).__name__}")
    from .run import train as run_job

    with ExitStack() as stack:
        stack.enter_context(_as_found())
        if not verbose:
            stack.enter_context(console.capture(console.job_log_dir(config.train.output_dir)))
        run_id = run_job(config, resume=resume)
        log = console.log_path()  # (the run's own directory by now)
    return Run.of(run_id, config.mlflow.tracking_uri, log)


def evaluate(run: Run | str | None = None, *, checkpoint: str | None = None, model: str | None = None,
             tracking_uri: str | None = None, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Test a trained model again (what ``adcs evaluate`` runs): clean, PGD-k and, with
    ``overrides=["eval.autoattack=true"]``, AutoAttack accuracy.

    Args:
        run: a :class:`Run` or an MLflow run id: its last checkpoint is tested and the results
            are logged to it as ``evaluate_*`` metrics.
        checkpoint: a checkpoint file instead of a run (nothing is logged).
        model: an MLflow Model that a job logged instead (``models:/<name>/<version>``,
            ``runs:/<run id>/model``; nothing is logged).
        tracking_uri: the store of a run given by id (default ``./mlflow.db``).
        overrides: ``key=value`` config overrides on top of the job's own config.
    """
    from .evaluation import evaluate as evaluate_job

    run_id, tracking_uri = _run_of(run, tracking_uri)
    if sum(x is not None for x in (run_id, checkpoint, model)) != 1:
        raise UsageError("evaluate needs one of a run (a Run or a run id), a checkpoint and a model URI")
    with _as_found():
        return evaluate_job(checkpoint=checkpoint, run_id=run_id, model=model, tracking_uri=tracking_uri,
                            overrides=overrides)


def load_model(source: Run | str, *, tracking_uri: str | None = None) -> "torch.nn.Module":
    """The trained model of a run, on the CPU and in eval mode; it takes float images in [0, 1],
    NCHW (normalisation is inside the model).

    Args:
        source: a :class:`Run` or an MLflow run id: the model its job tested last (the weight
            average with ``train.ema_decay``), rebuilt from the run's last checkpoint; or an
            MLflow model URI (``runs:/<run id>/<path>``, ``models:/<name>/<version>``), loaded by
            ``mlflow.pytorch.load_model``.
        tracking_uri: the MLflow store (default: the Run's, else ``./mlflow.db``).
    """
    run_id, tracking_uri = _run_of(source, tracking_uri)
    from .tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    with _as_found():
        model = _logged_model(str(source), uri) if run_id is None else _checkpoint_model(run_id, uri)
    return model.eval()


def _checkpoint_model(run_id: str, tracking_uri: str) -> "torch.nn.Module":
    """The model the run's job tested last (the weight average with ``train.ema_decay``), rebuilt
    from its last recorded checkpoint alone (``engine/saved_models.py``); a checkpoint older than
    ``model_shape`` is rebuilt through its job, whose data set says the shape."""
    from .engine.saved_models import checkpoint_shape, saved_models
    from .evaluation import job_of_checkpoint, open_run, read_checkpoint

    payload, where = read_checkpoint(None, open_run(run_id, tracking_uri))
    if checkpoint_shape(payload) is not None:
        return saved_models(payload)["last"]
    return job_of_checkpoint(payload, where, ["train.device=cpu"]).eval_model


def _logged_model(model_uri: str, tracking_uri: str) -> "torch.nn.Module":
    """``mlflow.pytorch.load_model`` of ``model_uri`` in the store ``tracking_uri``.

    MLflow 3.17 resolves a logged model (``runs:/<run>/<name>`` of a ``log_model(name=...)``,
    ``models:/<model id>``) in its process-global store whatever store it is handed, so that store
    is this one for the call and the caller's is put back (``_use_tracking_uri`` restores it
    exactly, "not set" included; tests/test_api.py checks it)."""
    import mlflow.pytorch

    from .tracking.model_log import tracking_uri_for_a_while

    with tracking_uri_for_a_while(tracking_uri):
        return mlflow.pytorch.load_model(model_uri, map_location="cpu")


def _run_of(run: Run | str | None, tracking_uri: str | None) -> tuple[str | None, str | None]:
    """(run id or None for a model URI, tracking URI) of what the caller named."""
    if isinstance(run, Run):
        return run.run_id, tracking_uri or run.tracking_uri
    if run is not None and ":/" in run:  # runs:/..., models:/...
        return None, tracking_uri
    return run, tracking_uri


__all__ = ["Run", "evaluate", "load_model", "train"]
