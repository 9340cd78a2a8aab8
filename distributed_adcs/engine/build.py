"""Build the job's parts from its config: data, model, objectives, optimiser, schedule."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..config import JobConfig, ObjectiveConfig
from ..data import DataSummary, Splits, describe_splits, load_splits
from ..data.augment import get_augmentation
from ..models import AdcsModel, ModelShape
from ..objectives import build_objective
from ..specs import params_kwargs
from .saved_models import build_job_model
from .schedule import EpochSchedule


def load_job_splits(cfg: JobConfig, *, evaluates: bool = True) -> Splits:
    """The job's splits; its test split is the ``eval.test_limit`` examples it evaluates on, none
    for a process that never evaluates (a Train rank other than 0, a Ray Train job's driver)."""
    d = cfg.data
    return load_splits(d.name, root=d.root, download=d.download, limit=d.limit, val_size=d.val_size,
                       test_limit=cfg.eval.test_limit if evaluates else 0, **params_kwargs(d.params))


def describe_job_data(cfg: JobConfig) -> DataSummary:
    """The job's training and class counts, read without its images (see ``describe_splits``)."""
    d = cfg.data
    return describe_splits(d.name, root=d.root, download=d.download, limit=d.limit, val_size=d.val_size,
                           **params_kwargs(d.params))


def model_shape(splits: Splits) -> ModelShape:
    """What the job's model must know of its data: classes, image channels and side, mean and std."""
    c, h, _ = splits.image_shape
    return ModelShape(num_classes=splits.num_classes, in_channels=c, image_size=h,
                      mean=tuple(float(m) for m in splits.mean), std=tuple(float(s) for s in splits.std))


def make_model(cfg: JobConfig, splits: Splits) -> AdcsModel:
    return build_job_model(cfg, model_shape(splits))


def make_objective(cfg: ObjectiveConfig, *, steps: int | None = None):
    """The training objective, or a cheaper copy with ``steps`` attack steps (selection).

    The cheaper attack takes the objective's default step for its own number of steps
    (``2.5 * epsilon / steps`` for PGD), or the configured step when that is larger: a step
    tuned for ``objective.steps`` (say 0.01 for 10 steps at epsilon 0.1) would move a 1-step
    selection attack a tenth of the way to the epsilon-ball, hardly an attack at all.
    """
    objective = build_objective(cfg)
    if steps is None or steps == cfg.steps:
        return objective
    cheap = build_objective(replace(cfg, steps=steps, step_size=None))
    if cfg.step_size is not None and cfg.step_size > cheap.step_size:
        cheap = cheap.with_attack(step_size=cfg.step_size)
    return cheap


def make_augment(cfg: JobConfig):
    return get_augmentation(cfg.data.augment, cfg.data.name)


def make_optimizer(cfg: JobConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, EpochSchedule]:
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, **optimizer_settings(cfg))
    return opt, EpochSchedule(opt, cfg.train)


def optimizer_settings(cfg: JobConfig) -> dict:
    """The optimiser's settings from the config (its learning rate is the schedule's): a restored
    optimiser takes them anew, so a checkpoint continues under this job's values (a PBT exploit)."""
    t = cfg.train
    return {"momentum": t.momentum, "weight_decay": t.weight_decay, "nesterov": t.nesterov and t.momentum > 0}


TIME_SPLIT = ("startup", "warmup", "selection", "training", "validation", "test")
"""The parts of a job's wall time, logged as ``time_<part>_s``: ``startup`` until the first epoch
of each (re)start, ``warmup`` the full-data epochs before the first selection, ``selection``,
``training`` every other epoch's training, ``validation`` and the final ``test`` evaluation."""


@dataclass
class TrainState:
    """Everything that changes during a job and is saved in its checkpoints."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: EpochSchedule
    epoch: int = 0  # epochs completed
    coreset_positions: torch.Tensor | None = None  # positions into splits.train
    coreset_weights: torch.Tensor | None = None
    coreset_epoch: int = -1
    elapsed_s: float = 0.0  # wall time of the epochs completed, across resumes
    # where the job's wall time went, cumulative across resumes (seconds): see TIME_SPLIT
    time_split: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIME_SPLIT, 0.0))
