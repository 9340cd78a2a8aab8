"""``adcs evaluate``: test-set evaluation of a saved model (a checkpoint or an MLflow run).

The job's config travels inside every checkpoint, so a checkpoint is self-describing;
``--set`` overrides apply on top (e.g. ``eval.autoattack=true``, ``eval.test_limit=500``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import yaml

from .config import UsageError, config_from_dict
from .engine.build import load_job_splits
from .engine.checkpoint import load_checkpoint
from .engine.job import Job
from .engine.runtime import resolve_device, seed_everything
from .tracking import RunTracker


def _checkpoint_from_run(tracker: RunTracker, run_id: str, tmp: str) -> Path:
    """The run's last recorded checkpoint (``tracking/epochs.py``: where it is)."""
    from .tracking.epochs import CHECKPOINT_ARTIFACT, CHECKPOINT_TAG, find_checkpoint

    found = find_checkpoint(tracker.client, run_id, Path(tmp))
    if found is None:
        raise UsageError(f"run {run_id}: no checkpoint where its {CHECKPOINT_TAG} tag says nor a {CHECKPOINT_ARTIFACT} "
                         f"artifact in {tracker.uri}")
    return found


def evaluate(*, checkpoint: str | None = None, run_id: str | None = None, tracking_uri: str | None = None,
             overrides: Sequence[str] = ()) -> dict[str, float]:
    """Evaluate and return the metrics; with ``run_id`` they are also logged to that run."""
    with tempfile.TemporaryDirectory() as tmp:
        tracker = None
        if run_id:
            try:  # the run's own experiment: evaluating creates none
                tracker = RunTracker(tracking_uri, None, run_id=run_id)
            except LookupError as err:
                raise UsageError(str(err)) from None
            checkpoint = str(_checkpoint_from_run(tracker, run_id, tmp))
        if checkpoint is None:  # the CLI requires one of the two
            raise UsageError("evaluate needs a checkpoint or a run id")
        try:
            payload = load_checkpoint(checkpoint)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None
    cfg = config_from_dict(yaml.safe_load(payload["config"]), overrides)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    try:
        splits = load_job_splits(cfg)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    job = Job(cfg, splits, device)
    try:
        job.load_models(payload)  # the weight average too: what the job's own evaluation tested
    except RuntimeError as err:  # another model (or data set) than the checkpoint's
        first = str(err).splitlines()[0]
        raise UsageError(f"{checkpoint}: its weights do not fit model.name={cfg.model.name} on "
                         f"data.name={cfg.data.name} ({first[:160]})") from None
    results = job.final_evaluation()
    if tracker is not None:
        # per attack run, so that a later evaluation with another attack keeps this one's outcomes
        what = cfg.eval.autoattack_version if cfg.eval.autoattack else f"pgd{cfg.eval.pgd_steps}"
        tracker.log_json(job.test_outcomes, f"eval/evaluate_{what}_outcomes.json")
        tracker.log_metrics({f"evaluate_{k}": v for k, v in results.items()}, step=int(payload["epoch"]))
        tracker.flush()  # a server that is restarting gets them when it is back (tracking/outbox.py)
    return results
