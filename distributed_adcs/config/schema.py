"""The job's schema: one ``kw_only, slots`` dataclass per config section, composed by
:class:`JobConfig`, each checking its ranges in ``__post_init__`` (cross-field rules in
``JobConfig``'s). A section that names a plug-in (an objective, a model, a dataset, a coreset
method) holds that plug-in's own parameters in its ``params`` field (:func:`plugin_params`),
typed by the plug-in's registry entry. :data:`MOVED_KEYS` lists the keys that moved.

Units are in the names or the docstrings: ``epsilon`` is in [0, 1] pixel units (8/255 is
``0.0314``), fractions are in [0, 1], epochs are counted from 0.

This module only describes; ``loader.py`` reads YAML and overrides into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import check as _check
from ..errors import check_unit as _in_unit
from ..methods import METHODS, get_method
from ..specs import entry_params
from ..specs.datasets import DATASETS, get_dataset
from ..specs.models import MODELS
from ..specs.objectives import OBJECTIVES, get_objective


def plugin_params(registry: Mapping[str, Any], by: str = "name") -> Any:
    """A section's ``params`` field: the parameters of the ``registry`` entry that the section's
    field ``by`` names, an instance of the entry's ``params`` dataclass. In YAML a mapping
    (``objective: {name: trades, params: {beta: 6}}``) that the walker checks against that class;
    absent or null: the entry's defaults."""
    return field(default=None, metadata={"registry": registry, "by": by})


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """Which data, how much of it, and how it is batched."""

    name: str = "fashion_mnist"  # a key of specs/datasets.py DATASETS
    root: str | None = None  # None: the dataset's default location (Debian's files for fashion_mnist)
    download: bool = False  # let torchvision download when the files are missing
    limit: int | None = None  # first N training examples (after the validation hold-out)
    val_size: int = 1000  # examples held out from the end of the source training split
    batch_size: int = 128  # per worker, examples
    eval_batch_size: int = 500
    augment: Literal["auto", "none", "crop_flip"] = "auto"  # auto: the dataset's default
    params: Any = plugin_params(DATASETS)  # the dataset's own (parquet: image_column, label_column)

    def __post_init__(self) -> None:
        self.params = entry_params(DATASETS, self.name, self.params)
        _check(self.limit is None or self.limit >= 1, "limit", f"must be >= 1 or null, got {self.limit}")
        _check(self.val_size >= 1, "val_size", f"must be >= 1, got {self.val_size}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.eval_batch_size >= 1, "eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    name: str = "small_cnn"  # a key of specs/models.py MODELS
    params: Any = plugin_params(MODELS)  # the architecture's own (wide_resnet: depth, width)

    def __post_init__(self) -> None:
        self.params = entry_params(MODELS, self.name, self.params)


@dataclass(kw_only=True, slots=True)
class ObjectiveConfig:
    """The adversarial training objective and its attack (``objectives.build_objective`` reads it).

    Attributes:
        name: a key of ``specs/objectives.py`` ``OBJECTIVES``, whose entry says which norm
            ``epsilon`` is measured in.
        epsilon: threat-model radius. Pixel units ([0, 1] scale) for the l-inf / l2 objectives;
            LPIPS units for ``pat`` (0.5 is the paper's value with the model's own features on
            CIFAR-10).
        step_size: attack step; ``None`` picks each objective's default (``2.5 * epsilon / steps``
            for PGD and TRADES, ``1.25 * epsilon`` for fgsm_rs, ``epsilon`` for n_fgsm,
            ``epsilon`` (LPIPS units per step) for pat).
        steps: attack iterations (ignored by fgsm_rs and n_fgsm, which take one).
        random_start: random start for PGD (fgsm_rs always starts randomly, n_fgsm from its
            U(-k eps, k eps) noise, TRADES always uses its Gaussian start, pat a small Gaussian one).
        bn_mode: model mode during the attack, ``eval`` (running BN statistics, not updated) or
            ``train`` (batch statistics; updates running statistics). The loss forward always
            runs in train mode.
        params: the objective's own parameters (trades: ``beta``; n_fgsm: ``noise_mult``; pat:
            ``lam``, ``lpips_weights``), declared next to its registry entry.
    """

    name: str = "pgd_linf"
    epsilon: float = 0.1
    step_size: float | None = None
    steps: int = 10
    random_start: bool = True
    bn_mode: Literal["eval", "train"] = "eval"
    params: Any = plugin_params(OBJECTIVES)
    # single-step objectives only: this share of each batch, the examples whose recorded
    # adversarial margin is nearest 0, get boundary_steps more PGD steps from their single-step
    # example (engine/boundary.py); 0: off. boundary_step_size null: 2.5 * epsilon / boundary_steps
    boundary_share: float = 0.0
    boundary_steps: int = 2
    boundary_step_size: float | None = None

    def __post_init__(self) -> None:
        self.params = entry_params(OBJECTIVES, self.name, self.params)
        _check(0 <= self.epsilon < float("inf"), "epsilon", f"must be >= 0, got {self.epsilon}")  # per norm: JobConfig
        _check(self.step_size is None or self.step_size > 0, "step_size", f"must be > 0 or null, got {self.step_size}")
        _check(self.steps >= 0, "steps", f"must be >= 0, got {self.steps}")
        _in_unit(self.boundary_share, "boundary_share")
        _check(self.boundary_steps >= 1, "boundary_steps", f"must be >= 1, got {self.boundary_steps}")
        _check(self.boundary_step_size is None or self.boundary_step_size > 0, "boundary_step_size",
               f"must be > 0 or null, got {self.boundary_step_size}")
        _check(self.boundary_share == 0 or get_objective(self.name).single_step, "boundary_share",
               f"extra steps are for single-step objectives; {self.name} is not one")


@dataclass(kw_only=True, slots=True)
class CoresetConfig:
    """Adversarial coreset selection. ``method`` is a key of ``distributed_adcs.methods.METHODS``;
    ``full`` trains on all data (the baseline)."""

    method: str = "full"
    fraction: float = 0.3  # coreset size as a fraction of the training set
    every: int = 5  # epochs between selections (R)
    warmup_epochs: int = 2  # full-data adversarial epochs before the first selection
    per_class: bool = True
    per_batch: bool = False  # select whole mini-batches by their mean gradient
    # PGD steps of the selection attack (training uses objective.steps). 1 step: the selection
    # phase costs 18% of a PGD-10 epoch and its coreset is as good as with PGD-10 embeddings
    # (benchmarks/bench_selection_cost.py, docs/measurements.md); 2 steps already cost 31%.
    selection_steps: int = 1
    # gradient w.r.t. the logits; + the last layer's weights; + only the own class's weight row
    embedding: Literal["logits", "last_layer", "last_layer_class"] = "logits"
    final_full_epochs: int = 0  # the last N epochs train on all data (every method but full)
    params: Any = plugin_params(METHODS, by="method")  # the method's own (adaptive: its shares)

    def __post_init__(self) -> None:
        self.params = entry_params(METHODS, self.method, self.params, key="method")
        _check(0.0 < self.fraction <= 1.0, "fraction", f"must be in (0, 1], got {self.fraction}")
        _check(self.every >= 1, "every", f"must be >= 1, got {self.every}")
        _check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        _check(self.selection_steps >= 0, "selection_steps", f"must be >= 0, got {self.selection_steps}")
        _check(self.final_full_epochs >= 0, "final_full_epochs", f"must be >= 0, got {self.final_full_epochs}")


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """SGD with momentum; the learning-rate schedule runs over the epochs that actually run."""

    epochs: int = 10
    lr: float = 0.05  # peak learning rate for batch_size examples per step and worker
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: Literal["constant", "piecewise", "cosine", "onecycle"] = "cosine"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # piecewise: fractions of epochs
    gamma: float = 0.1  # piecewise: decay factor at each milestone
    output_dir: str = "runs"  # checkpoints, relative to the working directory
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # forwards (training, attacks, embeddings, evaluation) under autocast; weights stay float32.
    # fp16 adds a gradient scaler to the update (attacks use the gradient's sign or direction)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = True  # NHWC weights and inputs on CUDA (ignored on the CPU)
    cudnn_benchmark: bool = True  # let cuDNN pick the fastest kernels (off under `deterministic`)
    # exponential moving average of the weights and BatchNorm buffers, updated after every
    # optimiser step; validation and the test evaluation use it (engine/ema.py). null: off; 0.99 is
    # the decay chosen on the validation split (docs/measurements.md)
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _check(self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay",
               f"must be in (0, 1) or null, got {self.ema_decay}")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _in_unit(self.momentum, "momentum")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(all(0 < m < 1 for m in self.milestones), "milestones", f"must be fractions in (0, 1), got {self.milestones}")
        _check(list(self.milestones) == sorted(self.milestones), "milestones", "must be increasing")
        _check(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")


@dataclass(kw_only=True, slots=True)
class EvalConfig:
    """Per-epoch validation and the final test evaluation."""

    norm: Literal["auto", "linf", "l2"] = "auto"  # auto: the objective's norm (pat needs a choice)
    epsilon: float | None = None  # pixel units; None: objective.epsilon (pat needs a value)
    val_pgd_steps: int = 10  # robust accuracy on the validation split (PGD steps)
    val_every: int = 1  # validate after every N-th epoch (and always after the last)
    pgd_steps: int = 20  # final test evaluation
    pgd_restarts: int = 1
    test_limit: int | None = None  # first N test examples (None: all)
    autoattack: bool = False
    autoattack_n: int = 1000  # test examples given to AutoAttack
    # standard: Croce & Hein's published version (APGD-CE, APGD-T, FAB-T at 100 iterations, then
    # Square with 5,000 queries), logged as test_autoattack_acc. fast: torchattacks' own
    # "standard" (10 iterations each), logged under its own name, test_autoattack_fast_acc.
    # square: Square alone (5,000 queries), the black-box check for gradient masking, test_square_acc
    autoattack_version: Literal["standard", "fast", "square"] = "standard"
    # Square's queries in every version. 5,000 is the published count; fewer is a quicker, weaker
    # check, not AutoAttack as published (the benchmarks' smoke runs: a tiny model's robust images
    # each take every query)
    square_queries: int = 5000
    # keep the best epoch's model by validation robust accuracy (never the test set) in the
    # checkpoint, and evaluate it too: best_test_* metrics beside test_*, and best_epoch
    keep_best: bool = True

    def __post_init__(self) -> None:
        _check(self.epsilon is None or 0 <= self.epsilon < float("inf"), "epsilon",
               f"must be >= 0 or null, got {self.epsilon}")  # its range per norm: JobConfig
        _check(self.val_pgd_steps >= 1, "val_pgd_steps", f"must be >= 1, got {self.val_pgd_steps}")
        _check(self.val_every >= 1, "val_every", f"must be >= 1, got {self.val_every}")
        _check(self.pgd_steps >= 1, "pgd_steps", f"must be >= 1, got {self.pgd_steps}")
        _check(self.pgd_restarts >= 1, "pgd_restarts", f"must be >= 1, got {self.pgd_restarts}")
        _check(self.test_limit is None or self.test_limit >= 1, "test_limit", f"must be >= 1 or null, got {self.test_limit}")
        _check(self.autoattack_n >= 1, "autoattack_n", f"must be >= 1, got {self.autoattack_n}")
        _check(self.square_queries >= 1, "square_queries", f"must be >= 1, got {self.square_queries}")


@dataclass(kw_only=True, slots=True)
class GuardConfig:
    """The catastrophic-overfitting guard (Wong, Rice & Kolter 2020; ``engine/guard.py``): after
    every epoch a PGD check on a fixed validation batch; a drop of robust accuracy by more than
    ``max_drop`` since the previous check restores the previous epoch's state and continues with
    ``fallback``. Off by default: docs/attack_compute.md says why."""

    enabled: bool = False
    examples: int = 256  # the first N validation examples, the same every check
    pgd_steps: int = 5  # PGD steps of the check (Wong et al.: 5), from a fixed seed
    max_drop: float = 0.20  # a fraction of the batch: 0.20 is 20 points of robust accuracy
    # pgd: the objective becomes PGD-fallback_steps in its norm for the remaining epochs (the
    # collapsed epoch is trained again); stop: the run ends with the previous epoch's model
    fallback: Literal["pgd", "stop"] = "pgd"
    fallback_steps: int = 2

    def __post_init__(self) -> None:
        _check(self.examples >= 1, "examples", f"must be >= 1, got {self.examples}")
        _check(self.pgd_steps >= 1, "pgd_steps", f"must be >= 1, got {self.pgd_steps}")
        _check(0 < self.max_drop <= 1, "max_drop", f"must be in (0, 1], got {self.max_drop}")
        _check(self.fallback_steps >= 1, "fallback_steps", f"must be >= 1, got {self.fallback_steps}")


def check_radius(key: str, norm: str, eps: float, dataset: str) -> None:
    """An epsilon's range depends on its norm: l-inf radii are pixel units in [0, 1]; an l2
    radius can exceed 1 (3.0 on ImageNet is common) but not sqrt(C*H*W), the l2 distance
    between a black and a white image, past which the ball holds every image."""
    if norm == "linf":
        _check(eps <= 1, key, f"an l-inf radius in pixel units must be in [0, 1], got {eps}")
    elif norm == "l2" and (size := get_dataset(dataset).input_size) is not None:
        bound = size**0.5
        _check(eps < bound, key, f"an l2 radius on {dataset} must be below sqrt(C*H*W) = {bound:.1f} "
                                 f"(the ball would hold every image), got {eps}")


def eval_threat(cfg: "JobConfig") -> tuple[str, float]:
    """(norm, epsilon in pixel units) of the robust evaluation for this job: ``eval.norm``, or
    the objective's own pixel norm (its registry entry's)."""
    norm = cfg.eval.norm if cfg.eval.norm != "auto" else get_objective(cfg.objective.name).norm
    eps = cfg.eval.epsilon if cfg.eval.epsilon is not None else cfg.objective.epsilon
    return norm, eps


@dataclass(kw_only=True, slots=True)
class SelectionConfig:
    """How a selection is sharded and merged. These decide the coreset wherever it is computed
    (in the training process, on embedding actors or on Ray Train ranks): they are not Ray's."""

    num_shards: int = 4  # fixed index-range shards; decide selection randomness, not who computes them
    merge: Literal["auto", "exact", "two_round"] = "auto"
    # auto: the exact merge while the merging process's selection fits this budget (the gathered
    # embeddings and the greedy's own matrices: engine/merge.py merge_bytes), else two_round
    merge_memory_gb: float = 4.0
    # two_round: each shard keeps this many times its share of a class's budget as candidates
    greedi_oversample: float = 2.0

    def __post_init__(self) -> None:
        _check(self.num_shards >= 1, "num_shards", f"must be >= 1, got {self.num_shards}")
        _check(self.merge_memory_gb > 0, "merge_memory_gb", f"must be > 0, got {self.merge_memory_gb}")
        _check(self.greedi_oversample >= 1, "greedi_oversample", f"must be >= 1, got {self.greedi_oversample}")


# keys that moved to another section: loading one is a one-line error that names the new key
MOVED_KEYS = {f"ray.{key}": f"selection.{key}" for key in ("num_shards", "merge", "merge_memory_gb",
                                                           "greedi_oversample")}
# a plug-in's own parameters moved from its section into the section's params (specs/, methods.py)
MOVED_KEYS.update({
    "objective.beta": "objective.params.beta", "objective.pat_lambda": "objective.params.lam",
    "objective.lpips_weights": "objective.params.lpips_weights",
    "model.depth": "model.params.depth", "model.width": "model.params.width",
    "coreset.uniform_share": "coreset.params.uniform_share", "coreset.class_floor": "coreset.params.class_floor",
    "data.image_column": "data.params.image_column", "data.label_column": "data.params.label_column",
})


def moved_key_message(dotted: str) -> str | None:
    """``"moved to selection.num_shards"`` for a key that moved (:data:`MOVED_KEYS`), else None."""
    new = MOVED_KEYS.get(dotted)
    return None if new is None else f"moved to {new}"


@dataclass(kw_only=True, slots=True)
class RayConfig:
    """Where and how wide the distributed pipeline runs: placement and resources."""

    address: str | None = None  # None: start a local Ray; "auto" or "HOST:PORT": join a cluster
    num_workers: int = 1  # Ray Train DDP workers; 0 trains in the adcs process without Ray
    # embedding actors of an in-process job (num_workers: 0); 0 embeds in the training process.
    # A Ray Train job embeds on its own workers and starts no actors (distributed/trainer.py)
    num_actors: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 1.0  # only used when use_gpu
    max_failures: int = 2
    # a Ray Train job's ranks wait this long for rank 0's selection (through the process group's
    # store, outside any collective, so the 30-minute collective timeout does not apply)
    selection_wait_s: float = 86_400.0
    # Ray Train waits 60 s for its worker group, then retries; this bounds the retries (Ray's
    # default is forever). A request the cluster can never hold fails at once (resources.py)
    startup_retries: int = 5

    def __post_init__(self) -> None:
        for key in ("num_workers", "num_actors", "max_failures", "startup_retries"):
            _check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        _check(self.selection_wait_s > 0, "selection_wait_s", f"must be > 0, got {self.selection_wait_s}")
        for key in ("cpus_per_worker", "cpus_per_actor", "gpus_per_actor"):
            _check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")


OUTAGE_S = 300.0  # mlflow.outage_s: 5 minutes, the default


@dataclass(kw_only=True, slots=True)
class MlflowConfig:
    tracking_uri: str | None = None  # None: sqlite:///<cwd>/mlflow.db
    experiment: str = "distributed_adcs"
    run_name: str | None = None  # None: derived from dataset, objective, method and fraction
    # log the last epoch's model (the weight average with train.ema_decay) as runs:/<id>/model and,
    # with eval.keep_best, the best epoch's as runs:/<id>/best_model: MLflow Models exported with
    # torch.export, with a robustness card (tracking/model_log.py)
    log_model: bool = True
    # register the logged model under this name (a new version per run): the best epoch's model
    # with eval.keep_best, else the last one. None: register nothing
    registered_model: str | None = None
    # how long a job keeps a tracking server's records and retries when the server does not
    # answer (a restart, a pod move, a database failover), training on, before the run fails
    # (tracking/outbox.py); http(s) tracking URIs only
    outage_s: float = OUTAGE_S
    # MLflow's system metrics (CPU, memory, disk, network, and GPUs that NVML sees) as
    # system/... metrics: from the job's process, or from each node of a Ray Train job
    # (system/<node>/...). One sample per interval: 30 s keeps a day-long job to 2,880 points a
    # metric (MLflow's default of 10 s: 8,640); MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it
    system_metrics: bool = True
    system_metrics_interval_s: float = 30.0

    def __post_init__(self) -> None:
        name = self.registered_model
        _check(name is None or (name.strip() == name and name != "" and "/" not in name and ":" not in name),
               "registered_model", f"must be a name without '/', ':' or surrounding spaces, got {name!r}")
        _check(name is None or self.log_model, "registered_model",
               "needs mlflow.log_model: true (only a logged model can be registered)")
        _check(self.outage_s >= 0, "outage_s", f"must be >= 0 seconds, got {self.outage_s}")
        _check(self.system_metrics_interval_s > 0, "system_metrics_interval_s",
               f"must be > 0, got {self.system_metrics_interval_s}")


@dataclass(kw_only=True, slots=True)
class JobConfig:
    """The whole job. ``seed`` drives data order, attacks, selection and initialisation."""

    seed: int = 0
    deterministic: bool = False  # torch deterministic algorithms (slower; exact reruns)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    coreset: CoresetConfig = field(default_factory=CoresetConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    def __post_init__(self) -> None:
        _check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        objective = get_objective(self.objective.name)
        check_radius("objective.epsilon", objective.norm, self.objective.epsilon, self.data.name)
        if not objective.pixel_norm:  # pat: its epsilon is in LPIPS units, not pixels
            _check(self.eval.norm != "auto" and self.eval.epsilon is not None, "eval.norm",
                   f"objective {objective.name} needs eval.norm (linf or l2) and eval.epsilon (pixel units)")
        norm, eps = eval_threat(self)
        check_radius("eval.epsilon" if self.eval.epsilon is not None else "objective.epsilon", norm, eps,
                     self.data.name)
        _check(not (self.guard.enabled and self.guard.fallback == "pgd" and not objective.pixel_norm),
               "guard.fallback", f"pgd needs a pixel-norm objective; {objective.name} is not one (use stop)")
        c = self.coreset
        spec = get_method(c.method)
        merge = self.selection.merge
        _check(not (c.per_batch and merge == "two_round"), "selection.merge",
               "two_round merging selects examples; it cannot be combined with coreset.per_batch")
        _check(not (merge == "two_round" and spec.needs_embeddings and not spec.has_two_round_merge),
               "selection.merge", f"coreset.method {c.method} has no two-round merge; use exact or auto")
        if not spec.trains_on_all:
            _check(c.warmup_epochs + c.final_full_epochs < self.train.epochs, "coreset.warmup_epochs",
                   f"must be < train.epochs ({self.train.epochs}) minus coreset.final_full_epochs "
                   f"({c.final_full_epochs}) for coreset training, got {c.warmup_epochs}")
