"""``adcs evaluate``: test-set evaluation of a saved model (a checkpoint, an MLflow run, or an
MLflow Model that ``adcs train`` logged, e.g. a registered one: ``models:/<name>/<version>``); also
the model a checkpoint holds, rebuilt (``api.load_model``).

The job's config and the model's shape travel inside every checkpoint and logged model, so each
is self-describing: the data set is read only to evaluate on. ``--set`` overrides apply on top
(e.g. ``eval.autoattack=true``, ``eval.test_limit=500``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import yaml

from .config import UsageError, config_from_dict
from .engine.build import load_job_splits, model_shape
from .engine.checkpoint import load_checkpoint
from .engine.job import Job
from .engine.runtime import resolve_device, seed_everything
from .engine.saved_models import SHAPE_KEY, check_same_input, checkpoint_shape
from .tracking import RunTracker
from .tracking.epochs import OUTCOMES_DIR


def _checkpoint_from_run(tracker: RunTracker, run_id: str, tmp: str) -> Path:
    """The run's last recorded checkpoint (``tracking/epochs.py``: where it is)."""
    from .tracking.epochs import CHECKPOINT_ARTIFACT, CHECKPOINT_TAG, find_checkpoint

    found = find_checkpoint(tracker.client, run_id, Path(tmp))
    if found is None:
        raise UsageError(f"run {run_id}: no checkpoint where its {CHECKPOINT_TAG} tag says nor a {CHECKPOINT_ARTIFACT} "
                         f"artifact in {tracker.uri}")
    return found


def _payload_from_model(uri: str, tracking_uri: str | None) -> dict:
    """A checkpoint-shaped payload of a model logged by ``adcs train`` (``tracking/model_log.py``):
    its weights (already averaged when the job averaged), its job's config and its shape."""
    from .tracking.model_log import load_logged_model

    try:
        meta, state = load_logged_model(uri, tracking_uri)
    except (LookupError, ValueError) as err:
        raise UsageError(str(err)) from None
    return {"model": state, "epoch": int(meta["epoch"]) + 1, "config": meta["config"], SHAPE_KEY: meta[SHAPE_KEY]}


def evaluate(*, checkpoint: str | None = None, run_id: str | None = None, model: str | None = None,
             tracking_uri: str | None = None, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Evaluate and return the metrics; with ``run_id`` they are also logged to that run.

    ``model``: an MLflow Model that ``adcs train`` logged (``models:/<name>/<version>``, or
    ``runs:/<run id>/model``); it is evaluated as it was logged, one model with its weights as
    they are (averaging and keeping the best epoch's model are training-time matters)."""
    tracker = open_run(run_id, tracking_uri) if run_id else None
    if model is not None:
        payload, where = _payload_from_model(model, tracking_uri), model
        overrides = [*overrides, "train.ema_decay=null", "eval.keep_best=false"]
    else:
        payload, where = read_checkpoint(checkpoint, tracker)
    job = job_of_checkpoint(payload, where, overrides)
    results = job.final_evaluation()
    if tracker is not None:
        # per attack run, so that a later evaluation with another attack keeps this one's outcomes
        e = job.cfg.eval
        what = e.autoattack_version if e.autoattack else f"pgd{e.pgd_steps}"
        tracker.log_json(job.test_outcomes, f"{OUTCOMES_DIR}/evaluate_{what}_outcomes.json")
        tracker.log_metrics({f"evaluate_{k}": v for k, v in results.items()}, step=int(payload["epoch"]))
        tracker.flush()  # a server that is restarting gets them when it is back (tracking/outbox.py)
    return results


def open_run(run_id: str, tracking_uri: str | None) -> RunTracker:
    """An existing run of the store ``tracking_uri``, in its own experiment: opening creates none."""
    try:
        return RunTracker(tracking_uri, None, run_id=run_id)
    except LookupError as err:
        raise UsageError(str(err)) from None


def read_checkpoint(checkpoint: str | None, tracker: RunTracker | None = None) -> tuple[dict, str]:
    """The checkpoint's contents and where it was: the file ``checkpoint``, or the last one the
    run of ``tracker`` recorded."""
    with tempfile.TemporaryDirectory() as tmp:
        if tracker is not None:
            checkpoint = str(_checkpoint_from_run(tracker, tracker.open_run_id, tmp))
        if checkpoint is None:  # the CLI requires one of the three
            raise UsageError("evaluate needs a checkpoint, a run id or a model URI")
        try:
            return load_checkpoint(checkpoint), checkpoint
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None


def job_of_checkpoint(payload: dict, where: str, overrides: Sequence[str] = ()) -> Job:
    """The job a checkpoint came from (its config, ``overrides`` on top), with the checkpoint's
    models loaded (``Job.load_models``): the weight average too, what the job's own evaluation
    tested. Seeds the process's random streams, as the job did."""
    cfg = config_from_dict(yaml.safe_load(payload["config"]), overrides)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    try:
        splits = load_job_splits(cfg)
        shape = checkpoint_shape(payload)  # the model's own (None: a checkpoint older than model_shape)
        if shape is not None:
            check_same_input(shape, model_shape(splits), str(where))
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    job = Job(cfg, splits, device, shape=shape)
    try:
        job.load_models(payload)
    except RuntimeError as err:  # another model (or data set) than the checkpoint's
        first = str(err).splitlines()[0]
        raise UsageError(f"{where}: its weights do not fit model.name={cfg.model.name} on "
                         f"data.name={cfg.data.name} ({first[:160]})") from None
    return job
