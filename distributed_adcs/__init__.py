"""Adversarial coreset training at cluster scale: Ray actors select, Ray Train trains, MLflow tracks.

The Python API (``api.py``; the command line is ``adcs``, ``cli.py``)::

    import distributed_adcs as adcs

    cfg = adcs.load_config("configs/quickstart.yaml", ["train.epochs=3"])
    run = adcs.train(cfg)              # -> adcs.Run: run id, status, final metrics, MLflow URIs
    model = adcs.load_model(run)       # the trained torch model
    adcs.evaluate(run, overrides=["eval.autoattack=true"])

Every name loads on first use: ``import distributed_adcs`` and :func:`load_config` import
neither torch, Ray nor MLflow, so a bad config is reported in a fraction of a second.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Run, evaluate, load_model, train
    from .config import JobConfig, UsageError, load_config

# name: the module that defines it
_EXPORTS = {"load_config": "config", "JobConfig": "config", "UsageError": "config",
            "train": "api", "evaluate": "api", "load_model": "api", "Run": "api"}

__all__ = ["JobConfig", "Run", "UsageError", "evaluate", "load_config", "load_model", "train"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
