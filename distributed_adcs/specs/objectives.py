"""The objective registry: every fact about an adversarial training objective, stated once.

A new objective is one module plus one entry in ``OBJECTIVES``. The module provides a subclass
of ``distributed_adcs.objectives.base.Objective``, constructed from the job's
``ObjectiveConfig`` (``cfg.params`` is an instance of the entry's ``params``), that implements:

- ``_inner_max(model, x, y, generator) -> x_adv``: the attack; detached images in [0, 1].
- ``loss_from_logits(logits_clean, logits_adv, y) -> [B]``: one loss per example, so that a
  weighted coreset loss ``sum_i w_i loss_i`` exists (the base class: CE on the adversarial
  logits).
- ``logit_grads(logits_clean, logits_adv, y) -> (d loss_i / d logits_clean or None,
  d loss_i / d logits_adv)`` in closed form: ``embeddings.py`` builds every coreset method's
  gradient embeddings from it without a backward pass, and tests/test_objectives.py checks it
  against autograd for every registered entry (the base class: softmax minus one-hot).
- ``needs_clean_logits = True`` when the loss or its gradient reads the clean logits (TRADES).
- ``default_step_size()`` when ``2.5 * epsilon / steps`` is not the attack's rule.

Fields of :class:`ObjectiveSpec`:

- ``build``: ``"module:attribute"`` of the class (or any ``fn(cfg) -> Objective``).
- ``norm``: the threat model ``objective.epsilon`` is measured in. ``linf`` and ``l2`` are
  pixel-unit balls: the config bounds the radius with them, the objective's attack projects onto
  that ball, and the robust evaluation uses the same norm unless ``eval.norm`` says otherwise.
  Any other value (``lpips``) is not a pixel ball: the job must then name ``eval.norm`` and
  ``eval.epsilon`` itself.
- ``params``: the dataclass of the objective's own parameters (``objective.params``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import check
from . import NoParams, lookup, resolve

PIXEL_NORMS = ("linf", "l2")  # the balls the attacks project onto (attacks/geometry.py GEOMETRIES)


@dataclass(frozen=True, kw_only=True, slots=True)
class TradesParams:
    beta: float = 6.0  # weight of KL(clean || adversarial) against the clean CE (beta, not beta^2)

    def __post_init__(self) -> None:
        check(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")


@dataclass(frozen=True, kw_only=True, slots=True)
class NFGSMParams:
    # k: the noise is U(-k eps, k eps) around x; 2 is the paper's default (3 or 4 only at their
    # largest radii); 0 drops the noise
    noise_mult: float = 2.0

    def __post_init__(self) -> None:
        check(self.noise_mult >= 0, "noise_mult", f"must be >= 0, got {self.noise_mult}")


@dataclass(frozen=True, kw_only=True, slots=True)
class FGSMPGIParams:
    # the label-smoothed target's weight on the true class; the rest is spread evenly over the
    # other classes (the authors' --factor 0.6)
    true_class_prob: float = 0.6
    consistency: bool = True  # the lam * MSE(f(x + delta), f(x + prior)) term; False: CE only
    lam: float = 10.0  # its weight (the authors' --lamda 10)
    momentum_decay: float = 0.3  # mu in m <- g / ||g||_1 + mu m (the authors' --momentum_decay)
    # a fresh random prior every R epochs: the authors reset every 40 of 110 epochs; 15 is that
    # share (40/110) of our E = 40 schedule
    reset_every: int = 15

    def __post_init__(self) -> None:
        check(0 < self.true_class_prob <= 1, "true_class_prob", f"must be in (0, 1], got {self.true_class_prob}")
        check(self.lam >= 0, "lam", f"must be >= 0, got {self.lam}")
        check(0 <= self.momentum_decay <= 1, "momentum_decay", f"must be in [0, 1], got {self.momentum_decay}")
        check(self.reset_every >= 1, "reset_every", f"must be >= 1, got {self.reset_every}")


@dataclass(frozen=True, kw_only=True, slots=True)
class PatParams:
    # the penalty multiplier on max(0, d - eps), 10 as in the paper; over the attack steps it
    # grows geometrically from a tenth of it to it
    lam: float = 10.0
    # a torchvision AlexNet/VGG-16 state dict for the perceptual distance; None: the trained
    # model's own perceptual_modules() ("PAT-self")
    lpips_weights: str | None = None

    def __post_init__(self) -> None:
        check(self.lam > 0, "lam", f"must be > 0, got {self.lam}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ObjectiveSpec:
    name: str
    summary: str  # one line for docs
    build: str  # "module:attribute" of fn(cfg: ObjectiveConfig) -> Objective
    norm: str  # "linf" or "l2" (pixel units), or a non-pixel distance such as "lpips"
    params: type = NoParams
    # one attack step per example (fgsm_rs, n_fgsm, fgsm_pgi): such an objective can take
    # objective.boundary_share's extra steps (engine/boundary.py)
    single_step: bool = False

    @property
    def pixel_norm(self) -> bool:
        """Whether ``epsilon`` is a pixel-unit ball that evaluation can attack in as well."""
        return self.norm in PIXEL_NORMS

    def build_fn(self) -> Callable[..., Any]:
        return resolve(self.build)


OBJECTIVES: dict[str, ObjectiveSpec] = {spec.name: spec for spec in (
    ObjectiveSpec(name="pgd_linf", summary="PGD adversarial training (Madry et al.) in the l-inf ball",
                  build="distributed_adcs.objectives.pgd:PGDObjective", norm="linf"),
    ObjectiveSpec(name="pgd_l2", summary="PGD adversarial training in the l2 ball",
                  build="distributed_adcs.objectives.pgd:PGDObjective", norm="l2"),
    ObjectiveSpec(name="fgsm_rs", summary="FGSM with a random start (Wong, Rice & Kolter)",
                  build="distributed_adcs.objectives.pgd:FGSMRS", norm="linf", single_step=True),
    ObjectiveSpec(name="n_fgsm", summary="N-FGSM: one step of eps from U(-k eps, k eps) noise, unprojected (de Jorge et al.)",
                  build="distributed_adcs.objectives.n_fgsm:NFGSM", norm="linf", params=NFGSMParams,
                  single_step=True),
    ObjectiveSpec(name="fgsm_pgi",
                  summary="FGSM-PGI: one step of eps from a per-example prior kept across epochs, with a consistency term "
                          "(Jia et al.)",
                  build="distributed_adcs.objectives.fgsm_pgi:FGSMPGI", norm="linf", params=FGSMPGIParams,
                  single_step=True),
    ObjectiveSpec(name="trades", summary="TRADES: clean CE plus beta KL(clean || adversarial) (Zhang et al.)",
                  build="distributed_adcs.objectives.trades:Trades", norm="linf", params=TradesParams),
    ObjectiveSpec(name="pat", summary="Perceptual Adversarial Training, Fast-LPA in LPIPS units (Laidlaw et al.)",
                  build="distributed_adcs.objectives.pat:PAT", norm="lpips", params=PatParams),
)}


def get_objective(name: object) -> ObjectiveSpec:
    """The spec of ``name``; ``ConfigError`` (a ``ValueError``) naming the valid ones otherwise."""
    return lookup(OBJECTIVES, name, "objective.name")
