"""Typed sweep specification: which job keys to search, how, and with what resources.

A sweep file names a base job config and a search space over dotted job keys::

    base: quickstart.yaml            # relative to the sweep file
    set: {train.epochs: 3}           # fixed overrides for every trial
    search:
      coreset.fraction: {grid: [0.2, 0.4]}
      coreset.method: {grid: [craig, random]}
      train.lr: {loguniform: [0.01, 0.1]}
    num_samples: 1                   # repeats of the grid (random keys are redrawn)
    scheduler: asha                  # or fifo
    max_concurrent_trials: 2

Every searched key and every value (or bounds) is checked against the job schema before a
single trial starts, so a typo fails in a second, not after an hour.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .config import ConfigError, JobConfig, config_from_dict, read_yaml, walk
from .errors import check

KINDS = ("grid", "choice", "uniform", "loguniform", "randint")


@dataclass(kw_only=True, slots=True)
class SweepConfig:
    base: str  # path of the base job config, relative to the sweep file
    set: dict[str, Any] = field(default_factory=dict)
    search: dict[str, dict[str, list]] = field(default_factory=dict)
    num_samples: int = 1
    metric: str = "val_robust_acc"
    mode: Literal["max", "min"] = "max"
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: int = 2
    max_concurrent_trials: int = 2
    trial_cpus: float = 1.0  # in-process trials (ray.num_workers 0): CPUs each trial holds
    name: str = "sweep"

    def __post_init__(self) -> None:
        check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        check(self.max_concurrent_trials >= 1, "max_concurrent_trials", "must be >= 1")
        check(self.grace_period >= 1, "grace_period", "must be >= 1")
        check(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")
        check(self.trial_cpus > 0, "trial_cpus", f"must be > 0, got {self.trial_cpus}")
        check(bool(self.search), "search", "must name at least one key to search")
        for key, spec in self.search.items():
            check(isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS,
                   f"search.{key}", f"must be one mapping {{kind: values}} with kind in {', '.join(KINDS)}")
            kind, values = next(iter(spec.items()))
            check(isinstance(values, list) and len(values) > 0, f"search.{key}.{kind}", "must be a non-empty list")
            if kind in ("uniform", "loguniform", "randint"):
                check(len(values) == 2 and values[0] < values[1], f"search.{key}.{kind}", "must be [low, high]")


def trial_config(base: dict, fixed: dict[str, Any], params: dict[str, Any]) -> JobConfig:
    """The job config of one trial: base file, then fixed overrides, then the trial's values."""
    raw = yaml.safe_load(yaml.safe_dump(base))
    overrides = [f"{k}={json.dumps(v)}" for k, v in {**fixed, **params}.items()]  # JSON is YAML
    return config_from_dict(raw, overrides)


def load_sweep(path: str | Path) -> tuple[SweepConfig, dict]:
    """Read and check a sweep file; returns it with the raw base job mapping."""
    path = Path(path)
    raw = read_yaml(path, "sweep file")
    check(isinstance(raw, dict), "", f"{path}: the top level must be a mapping (base, search, ...), "
                                      f"got {type(raw).__name__}")
    sweep: SweepConfig = walk(SweepConfig, raw)
    base_path = (path.parent / sweep.base).resolve()
    if not base_path.is_file():
        raise ConfigError("base", f"base config not found: {base_path}")
    base = read_yaml(base_path, "base config")
    check(base is None or isinstance(base, dict), "base", f"{base_path}: the top level must be a mapping")
    base = base or {}
    for key, spec in sweep.search.items():  # every value (or both bounds) must make a valid job
        kind, values = next(iter(spec.items()))
        for value in (values if kind in ("grid", "choice") else values[:2]):
            try:
                trial_config(base, sweep.set, {key: value})
            except ConfigError as err:
                raise ConfigError(f"search.{key}", str(err)) from None
    return sweep, base


def grid_size(sweep: SweepConfig) -> int:
    """Number of trials Tune will run (grid points times ``num_samples``)."""
    sizes = [len(values) for spec in sweep.search.values() for kind, values in spec.items() if kind == "grid"]
    return sweep.num_samples * math.prod(sizes)
