"""Typed job configuration: nested dataclasses loaded from YAML plus dotted overrides.

``schema.py`` holds what a config is (the sections, their checks, the keys that moved);
``loader.py`` reads YAML and ``key=value`` overrides into it through one walker. Neither imports
torch, Ray or MLflow, so a bad config fails in well under a second, before they load.

Example::

    cfg = load_config("configs/quickstart.yaml", ["train.epochs=2", "coreset.method=random"])
"""

from ..errors import ConfigError, UsageError
from .loader import (
    apply_override,
    check_overrides,
    config_from_dict,
    dump_yaml,
    flatten,
    load_config,
    read_yaml,
    to_dict,
    walk,
)
from .schema import (
    MOVED_KEYS,
    CoresetConfig,
    DataConfig,
    EvalConfig,
    GuardConfig,
    JobConfig,
    MlflowConfig,
    ModelConfig,
    ObjectiveConfig,
    RayConfig,
    SelectionConfig,
    TrainConfig,
    check_radius,
    eval_threat,
    moved_key_message,
    plugin_params,
)

__all__ = [
    "MOVED_KEYS",
    "ConfigError",
    "CoresetConfig",
    "DataConfig",
    "EvalConfig",
    "GuardConfig",
    "JobConfig",
    "MlflowConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "RayConfig",
    "SelectionConfig",
    "TrainConfig",
    "UsageError",
    "apply_override",
    "check_overrides",
    "check_radius",
    "config_from_dict",
    "dump_yaml",
    "eval_threat",
    "flatten",
    "load_config",
    "moved_key_message",
    "plugin_params",
    "read_yaml",
    "to_dict",
    "walk",
]
