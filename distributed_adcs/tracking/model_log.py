"""A finished job's models as MLflow Models, each with its robustness card (``mlflow.log_model``).

After the final evaluation the driver logs, from the run's last recorded checkpoint (the same
on both execution paths, ``epochs.find_checkpoint``), the models that evaluation tested:

- ``model`` (``runs:/<run id>/model``): the last epoch's, the weight average when
  ``train.ema_decay`` is on;
- ``best_model``: the best epoch's by validation robust accuracy, with ``eval.keep_best``.

Each is an MLflow Model (``mlflow.pytorch.log_model``) that takes float32 ``[-1, C, H, W]``
images in [0, 1] and returns float32 ``[-1, classes]`` logits: the model normalises its input
itself. It is saved as ``pt2`` (``torch.export``; MLflow 3.17's default): a traced graph of the
forward in eval mode, whose loading runs no pickled code and needs neither this package nor the
data set. A pickled model would need ``distributed_adcs`` importable where it loads, and MLflow
3.17 refuses to unpickle one unless ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``.

The card (:func:`robustness_card`) says what RobustBench says of a model: threat model and
radius, clean, PGD and AutoAttack accuracy (which version, on how many test images), how it was
trained (objective, coreset method and fraction) and at what cost (wall time, passes). It is the
model's tags (and its registered version's), and ``robustness_card.json`` in its artifacts.
The model's MLmodel ``metadata`` holds the job's config and the model's shape under ``adcs``:
what ``adcs evaluate --model`` rebuilds the model from.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..config import JobConfig, eval_threat
from ..methods import get_method
from .epochs import OUTCOMES_ARTIFACT

MODEL_NAMES = {"last": "model", "best": "best_model"}  # checkpoint's model -> the run's MLflow Model
CARD_FILE = "robustness_card.json"
METADATA_KEY = "adcs"  # MLmodel metadata: {"config": YAML, "model_shape": {...}, "weights": "last"|"best"}
THREAT_MODELS = {"linf": "Linf", "l2": "L2"}  # RobustBench's names
MODEL_LOG_METRIC = "time_model_log_s"  # seconds this process spent logging the models (and registering one)


@dataclass(frozen=True)
class LoggedModel:
    which: str  # "last" or "best"
    uri: str  # runs:/<run id>/<name>
    model_id: str
    version: str | None = None  # its registered version, when registered


def robustness_card(cfg: JobConfig, which: str, metrics: dict[str, float], examples: dict[str, int],
                    epoch: int, run_id: str) -> dict[str, Any]:
    """The card of the ``which`` model (``"last"`` or ``"best"``) of a finished run.

    Args:
        metrics: the run's latest metrics (``test_*``; ``best_test_*`` for the best model).
        examples: test images per attack of the final evaluation (``Job.test_outcomes["examples"]``).
        epoch: the epoch (from 0) whose weights the model holds.
    """
    e, c = cfg.eval, cfg.coreset
    prefix = "best_test_" if which == "best" else "test_"
    norm, eps = eval_threat(cfg)
    pgd = f"pgd{e.pgd_steps}"
    autoattack = None
    for name in examples:  # the final evaluation's AutoAttack (or its fast or Square-only version)
        if name not in ("clean", pgd):
            autoattack = {"version": e.autoattack_version, "acc": metrics.get(f"{prefix}{name}_acc"),
                          "n_examples": examples[name]}
    trains_on_all = get_method(c.method).trains_on_all
    return {
        "model": MODEL_NAMES[which], "run_id": run_id, "epoch": epoch,
        "weights": ("best epoch by validation robust accuracy" if which == "best" else "last epoch")
        + (f", weight average (decay {cfg.train.ema_decay:g})" if cfg.train.ema_decay else ""),
        "dataset": cfg.data.name, "architecture": cfg.model.name,
        "threat_model": THREAT_MODELS[norm], "epsilon": eps,
        "clean_acc": metrics.get(f"{prefix}clean_acc"), "clean_n_examples": examples.get("clean"),
        "pgd": {"steps": e.pgd_steps, "restarts": e.pgd_restarts, "acc": metrics.get(f"{prefix}{pgd}_acc"),
                "n_examples": examples.get(pgd)},
        "autoattack": autoattack,
        "training": {"objective": cfg.objective.name, "epsilon": cfg.objective.epsilon, "steps": cfg.objective.steps,
                     "epochs": cfg.train.epochs},
        "coreset": {"method": c.method, "fraction": 1.0 if trains_on_all else c.fraction},
        "cost": {"wall_time_s": metrics.get("wall_time_s"), "passes_forward": _int(metrics.get("passes_forward")),
                 "passes_backward": _int(metrics.get("passes_backward"))},
    }


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def card_tags(card: dict[str, Any]) -> dict[str, str]:
    """The card as flat string tags (``pgd.acc``, ``autoattack.version``, ...); a missing value is ``none``."""
    out: dict[str, str] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = "none" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)

    walk({**card, "autoattack": card["autoattack"] or {"version": None}}, "")
    return out


def log_job_models(tracker, cfg: JobConfig, payload: dict[str, Any]) -> list[LoggedModel]:
    """Log the models of ``payload`` (the run's last recorded checkpoint) in ``tracker``'s run,
    with their cards; register one under ``mlflow.registered_model`` when it is set (the best
    epoch's when kept, else the last); return what was logged."""
    import mlflow.pytorch

    from ..engine.saved_models import SHAPE_KEY, saved_models

    started = time.perf_counter()
    run_id, client = tracker.open_run_id, tracker.client
    models = saved_models(payload)
    run = client.get_run(run_id)
    metrics = run.data.metrics
    examples = _examples(client, run_id)
    registered = cfg.mlflow.registered_model
    register = registered and ("best" if "best" in models else "last")
    logged = []
    for which, model in models.items():
        epoch = int(payload["best"]["epoch"]) if which == "best" else int(payload["epoch"]) - 1
        card = robustness_card(cfg, which, metrics, examples, epoch, run_id)
        name = MODEL_NAMES[which]
        entity = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                            tags=card_tags(card), params=dict(run.data.params), model_type="classifier")
        with tracking_uri_for_a_while(tracker.uri):  # mlflow.pytorch.log_model writes through MLflow's global URI
            mlflow.pytorch.log_model(
                model, name=name, model_id=entity.model_id, run_id=run_id, step=cfg.train.epochs,
                signature=_signature(payload[SHAPE_KEY]), input_example=_input_example(payload[SHAPE_KEY]),
                pip_requirements=[f"torch=={_base_version()}"], serialization_format="pt2",
                metadata={METADATA_KEY: {"config": payload["config"], SHAPE_KEY: payload[SHAPE_KEY], "weights": which,
                                         "epoch": epoch}})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / CARD_FILE
            path.write_text(json.dumps(card, indent=2, sort_keys=True))
            client.log_model_artifact(entity.model_id, str(path))
        version = None
        if registered and which == register:
            with tracking_uri_for_a_while(tracker.uri):  # the registry finds the logged model through the global URI
                version = _register(client, registered, entity.model_id, run_id, card_tags(card))
        logged.append(LoggedModel(which, f"runs:/{run_id}/{name}", entity.model_id, version))
    tracker.log_metrics({MODEL_LOG_METRIC: time.perf_counter() - started}, step=cfg.train.epochs)
    return logged


def _examples(client, run_id: str) -> dict[str, int]:
    """Test images per attack of the run's final evaluation (its outcomes artifact), {} without one."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, OUTCOMES_ARTIFACT, tmp)
        except Exception:  # a run whose final evaluation kept no outcomes
            return {}
        return {k: int(v) for k, v in json.loads(Path(path).read_text()).get("examples", {}).items()}


def _signature(shape: dict[str, Any]):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    c, side, classes = int(shape["in_channels"]), int(shape["image_size"]), int(shape["num_classes"])
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, c, side, side))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes))]))


def _input_example(shape: dict[str, Any]):
    """Two images of the data's mean colour: in [0, 1], and two so that ``torch.export`` keeps the
    batch dimension dynamic (it fixes a dimension of size 1)."""
    import numpy as np

    c, side = int(shape["in_channels"]), int(shape["image_size"])
    mean = np.asarray(shape["mean"], dtype=np.float32).reshape(1, c, 1, 1)
    return np.broadcast_to(mean, (2, c, side, side)).copy()


def _base_version() -> str:
    """torch's release without its local build label (``2.14.1+cu130`` -> ``2.14.1``): a pin that the
    CPU and CUDA builds both satisfy."""
    import torch

    return torch.__version__.split("+")[0]


def _register(client, name: str, model_id: str, run_id: str, tags: dict[str, str]) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, tags=tags,
                                          model_id=model_id)
    return str(version.version)


@contextmanager
def tracking_uri_for_a_while(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` for a while, with its download progress bars
    off (``adcs evaluate`` prints its metrics only); the process's own URI (and the environment
    variables, which MLflow's setter would unset) come back after."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", _PROGRESS_BAR)}
    os.environ[_PROGRESS_BAR] = "false"
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def load_logged_model(uri: str, tracking_uri: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(its adcs metadata, its state dict)`` of an MLflow Model that ``adcs train`` logged.

    Raises:
        LookupError: MLflow finds no model at ``uri``.
        ValueError: the model was not logged by ``adcs train`` (it has no ``adcs`` metadata).
    """
    import mlflow.pytorch
    from mlflow.models import get_model_info

    from .stores import resolve_tracking_uri

    with tracking_uri_for_a_while(resolve_tracking_uri(tracking_uri)):
        try:
            info = get_model_info(uri)
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise LookupError(f"--model {uri}: no such MLflow model ({first[:200]})") from None
        meta = (info.metadata or {}).get(METADATA_KEY)
        if not meta:
            raise ValueError(f"--model {uri}: not a model logged by adcs train (its MLmodel has no "
                             f"'{METADATA_KEY}' metadata)")
        module = mlflow.pytorch.load_model(uri)
    return meta, {k: v.detach().clone() for k, v in module.state_dict().items()}


__all__ = ["CARD_FILE", "METADATA_KEY", "MODEL_NAMES", "LoggedModel", "card_tags", "load_logged_model", "log_job_models",
           "robustness_card", "tracking_uri_for_a_while"]
