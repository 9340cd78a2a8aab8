"""Typed sweep specification: which job keys to search, how, and with what resources.

A sweep file names a base job config and a search space over dotted job keys::

    base: quickstart.yaml            # relative to the sweep file
    set: {train.epochs: 3}           # fixed overrides for every trial
    search:
      coreset.fraction: {grid: [0.2, 0.4]}
      coreset.method: {grid: [craig, random]}
      train.lr: {loguniform: [0.01, 0.1]}
    num_samples: 1                   # repeats of the grid (random keys are redrawn)
    search_alg: random               # grid, random, optuna or hyperopt (the last two: pip install '.[sweep]')
    scheduler: asha                  # fifo, or pbt (with pbt: {mutate: [train.lr], ...})
    max_concurrent_trials: 2

``search_alg``: ``random`` is Tune's basic generator (grid keys crossed, the other keys drawn
anew for each of ``num_samples`` repeats); ``grid`` is the same with grid keys only, so every
point is run; ``optuna`` (TPE) and ``hyperopt`` (TPE) choose each trial from the results so far,
``num_samples`` trials in all, and take no ``grid`` key (a model-based search needs a ``choice``).

``scheduler: pbt`` is Ray Tune's population-based training (:class:`PbtConfig`): every
``pbt.perturbation_interval`` epochs the trials in the lowest ``quantile_fraction`` continue from
the checkpoint of one in the highest, with the ``pbt.mutate`` keys perturbed within their
``search`` space. It needs Tune's basic generator (``search_alg: random | grid``) and in-process
trials (``ray.num_workers: 0``: a Ray Train trial hands Tune no checkpoint).

Every searched key and every value (or bounds) is checked against the job schema before a
single trial starts, so a typo fails in a second, not after an hour.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .config import ConfigError, JobConfig, config_from_dict, read_yaml, walk
from .errors import check

KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
# search_alg -> the package its Ray Tune searcher needs (None: Tune's own generator)
SEARCHERS: dict[str, str | None] = {"random": None, "grid": None, "optuna": "optuna", "hyperopt": "hyperopt"}
EXTRA = "sweep"  # pyproject's extra that installs every searcher's package
# job keys PBT cannot change mid-run: a donor's checkpoint only fits the same model and data set,
# and the epochs fix the learning-rate schedule's length
FROZEN = ("model.", "data.name", "train.epochs")


@dataclass(kw_only=True, slots=True)
class PbtConfig:
    """``scheduler: pbt``: Ray Tune's ``PopulationBasedTraining``, synchronous (every trial stops at
    each perturbation, so a trial continues from a donor's checkpoint of the same epoch)."""

    mutate: list[str] = field(default_factory=list)  # searched keys perturbed within their search space
    perturbation_interval: int = 2  # epochs between two perturbations (each restarts every trial)
    quantile_fraction: float = 0.25  # the bottom fraction that copies the top fraction
    resample_probability: float = 0.25  # a mutated key is drawn anew rather than perturbed (x0.8/x1.2, a shift)

    def validate(self, sweep: "SweepConfig") -> None:
        check(self.perturbation_interval >= 1, "pbt.perturbation_interval", "must be >= 1 (epochs)")
        check(0 < self.quantile_fraction <= 0.5, "pbt.quantile_fraction", "must be in (0, 0.5]")
        check(0 <= self.resample_probability <= 1, "pbt.resample_probability", "must be in [0, 1]")
        if sweep.scheduler != "pbt":
            check(self == PbtConfig(), "pbt", f"set only with scheduler: pbt (scheduler is {sweep.scheduler})")
            return
        check(not SEARCHERS[sweep.search_alg], "search_alg", f"scheduler pbt takes Tune's basic generator (random "
                                                             f"or grid), not {sweep.search_alg}: Tune refuses a "
                                                             f"searcher with PBT")
        check(bool(self.mutate), "pbt.mutate", "must name at least one searched key for PBT to perturb")
        check(grid_size(sweep) >= 2, "num_samples", "scheduler pbt needs a population of 2 trials or more (grid "
                                                    "points times num_samples)")
        for key in self.mutate:
            check(key in sweep.search, f"pbt.mutate.{key}", f"not searched: a mutated key takes its space from "
                                                            f"search (searched: {', '.join(sweep.search)})")
            check(not key.startswith(FROZEN), f"pbt.mutate.{key}", "cannot change mid-run (a donor's checkpoint "
                                                                   "fits only the same model, data and epochs)")


@dataclass(kw_only=True, slots=True)
class SweepConfig:
    base: str  # path of the base job config, relative to the sweep file
    set: dict[str, Any] = field(default_factory=dict)
    search: dict[str, dict[str, list]] = field(default_factory=dict)
    num_samples: int = 1
    search_alg: Literal["random", "grid", "optuna", "hyperopt"] = "random"
    metric: str = "val_robust_acc"
    mode: Literal["max", "min"] = "max"
    scheduler: Literal["asha", "fifo", "pbt"] = "asha"
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: int = 2
    max_concurrent_trials: int = 2
    trial_cpus: float = 1.0  # in-process trials (ray.num_workers 0): CPUs each trial holds
    name: str = "sweep"
    pbt: PbtConfig = field(default_factory=PbtConfig)  # scheduler pbt's settings

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
            if self.search_alg == "grid":
                check(kind == "grid", f"search.{key}", f"search_alg grid runs every point of a grid: {kind} is not "
                                                       f"one (use search_alg random)")
            elif SEARCHERS[self.search_alg]:
                check(kind != "grid", f"search.{key}", f"search_alg {self.search_alg} chooses each trial itself and "
                                                       f"takes no grid: use choice")
        self.pbt.validate(self)


def within_search(config: dict, search: dict[str, dict[str, list]]) -> dict:
    """PBT's explore step clipped to the search space: a perturbed bound key (x0.8, x1.2) stays in
    its ``[low, high]`` (``randint``'s high is exclusive), so every mutated trial is a valid job."""
    params = config["params"]
    for key, spec in search.items():
        kind, values = next(iter(spec.items()))
        if kind in ("uniform", "loguniform", "randint") and key in params:
            high = values[1] - 1 if kind == "randint" else values[1]
            params[key] = type(params[key])(min(max(params[key], values[0]), high))
    return config


def check_searcher_installed(sweep: SweepConfig) -> None:
    """The searcher's package is importable, or a one-line error naming the extra that installs it.

    Raises:
        ConfigError: ``search_alg`` needs a package this environment lacks.
    """
    package = SEARCHERS[sweep.search_alg]
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError("search_alg", f"{sweep.search_alg} needs the {package} package, which is not installed: "
                                        f"pip install 'distributed_adcs[{EXTRA}]'")


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
    if sweep.scheduler == "pbt":  # a Ray Train trial reports no checkpoint to Tune, which PBT copies
        workers = trial_config(base, sweep.set, {}).ray.num_workers
        check(workers == 0 and "ray.num_workers" not in sweep.search, "scheduler",
              f"pbt needs in-process trials (ray.num_workers: 0, got {workers}): a Ray Train trial hands Tune "
              f"no checkpoint to copy")
    check_searcher_installed(sweep)
    return sweep, base


def max_epochs(sweep: SweepConfig, base: dict) -> int:
    """The epochs of the sweep's longest trial: the largest searched ``train.epochs`` (a
    ``randint``'s high bound is exclusive), else the base config's with ``set`` applied."""
    spec = sweep.search.get("train.epochs")
    if spec is None:
        return trial_config(base, sweep.set, {}).train.epochs
    kind, values = next(iter(spec.items()))
    return int(max(values)) - (kind == "randint")


def sweep_state(sweep: SweepConfig, base: dict) -> dict:
    """What ``adcs sweep --resume`` needs to run the same sweep again (the base config's mapping
    itself, so that an edit of the file afterwards changes nothing)."""
    return {"sweep": asdict(sweep), "base": base}


def sweep_from_state(state: dict) -> tuple[SweepConfig, dict]:
    """The inverse of :func:`sweep_state`."""
    return walk(SweepConfig, state["sweep"]), state["base"]


def grid_size(sweep: SweepConfig) -> int:
    """Number of trials Tune will run (grid points times ``num_samples``; a searcher's sweep has no
    grid key, so ``num_samples``)."""
    sizes = [len(values) for spec in sweep.search.values() for kind, values in spec.items() if kind == "grid"]
    return sweep.num_samples * math.prod(sizes)
