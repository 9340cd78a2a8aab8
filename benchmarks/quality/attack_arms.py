"""The arms of bench_attack: where attack compute can go (issue 24), paired over seeds.

Every arm trains on the same data, model, optimiser and schedule (``base.yaml``, full data,
E epochs) and differs only by what its own overrides say: the objective, weight averaging,
the CO guard, a coreset. A new arm is one entry of :data:`FIRST` (the first phase) or of
:func:`combined` (arms built on the best single-step arm, known only after the first phase).

Costs, in passes through the model per training example and epoch (a forward and its
backward): PGD-7 8, PGD-2 3, FGSM-RS and N-FGSM 2, FGSM-PGI 2 plus a forward of the prior,
boundary extra steps 2 + share x steps, a subset at fraction f of a cost-c arm f x c. The
compute-matched PGD-7 arms run the epochs of the cheap arms' costs: E x c / 8.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .arms import Arm

EXPERIMENT = "bench-attack"
PGD7_COST = 8  # passes per example and epoch of the baseline
GUARD = ("guard.enabled=true",)  # every single-step arm: target 4 needs the CO check
BOUNDARY = ("objective.boundary_share=0.25", "objective.boundary_steps=2")  # cost 2 + 0.5
# The report compares the last models (the weight average where the arm averages). The best
# epoch's model would get the same final evaluation again: a second published AutoAttack on
# 1,000 images, which took as long as the whole PGD-7 training (the first arms, 2026-12-07).
# The arms that ran before this line evaluated both; their last models' numbers are the same.
LAST_MODEL_ONLY = ("eval.keep_best=false",)


@dataclass(frozen=True)
class AttackSpec:
    """One arm: its objective and options (config overrides), whether it averages weights, its
    cost (passes per example and epoch, for the matched arms and the time-left estimate), and
    whether it gets the published AutoAttack whatever the validation says."""

    set: tuple[str, ...]
    ema: bool = True
    cost: float = PGD7_COST
    single_step: bool = False
    headline: bool = False
    epochs: int | None = None  # a compute-matched arm: fewer epochs, compared at E
    method: str = "full"
    fraction: float = 1.0
    every: int = 1
    extra: tuple[str, ...] = field(default=())


def _pgd7_matched(cost: float, epochs: int) -> AttackSpec:
    return AttackSpec(("objective.name=pgd_linf", "objective.steps=7"), headline=True,
                      epochs=max(1, round(epochs * cost / PGD7_COST)))


def first_specs(epochs: int) -> dict[str, AttackSpec]:
    """The first phase, in table order: the baselines, the matched arms (the costs the cheap arms
    span: 1, a subset of a single-step arm at 0.5; 2, a single-step arm; 3, PGD-2 and the extra
    steps), then every cheap attack."""
    pgd7 = ("objective.name=pgd_linf", "objective.steps=7")
    return {
        "pgd7_ema": AttackSpec(pgd7, headline=True),  # the baseline
        "pgd7": AttackSpec(pgd7, ema=False, headline=True),  # today's full AT, without averaging
        **{f"pgd7_ema_matched{c}": _pgd7_matched(c, epochs) for c in (1, 2, 3)},
        "pgd2_ema": AttackSpec(("objective.name=pgd_linf", "objective.steps=2"), cost=3),
        "fgsm_rs_ema": AttackSpec(("objective.name=fgsm_rs", *GUARD), cost=2, single_step=True),
        "nfgsm_k2_ema": AttackSpec(("objective.name=n_fgsm", "objective.params.noise_mult=2", *GUARD), cost=2,
                                   single_step=True),
        "nfgsm_k1_ema": AttackSpec(("objective.name=n_fgsm", "objective.params.noise_mult=1", *GUARD), cost=2,
                                   single_step=True),
        "pgi_ema": AttackSpec(("objective.name=fgsm_pgi", *GUARD), cost=2.5, single_step=True),
        "pgi_nocons_ema": AttackSpec(("objective.name=fgsm_pgi", "objective.params.consistency=false", *GUARD),
                                     cost=2, single_step=True),
    }


def combined(best: str, spec: AttackSpec) -> dict[str, AttackSpec]:
    """The arms built on the best single-step arm ``best``: its extra steps near the boundary,
    and data selection stacked on it (random redrawn every epoch at 0.8 and 0.5, CRAIG at 0.5)."""
    def subset(method: str, fraction: float, every: int) -> AttackSpec:
        return AttackSpec(spec.set, cost=spec.cost * fraction, single_step=True, method=method, fraction=fraction,
                          every=every)

    return {f"{best}+boundary": AttackSpec((*spec.set, *BOUNDARY), cost=spec.cost + 0.5, single_step=True),
            f"{best}+random0.8": subset("random", 0.8, 1),
            f"{best}+random0.5": subset("random", 0.5, 1),
            f"{best}+craig0.5": subset("craig", 0.5, 3)}


def to_arm(name: str, spec: AttackSpec, epochs: int, *, decay: float, headline: bool | None = None) -> Arm:
    """The arm ``name`` for the runner (``quality/runner.py``); ``decay``: the weight average's."""
    own = spec.epochs or epochs
    ema = f"train.ema_decay={decay}" if spec.ema else "train.ema_decay=null"
    return Arm(name, spec.method, spec.fraction, own, min(spec.every, own),
               spec.headline if headline is None else headline, (*spec.set, ema, *LAST_MODEL_ONLY, *spec.extra),
               schedule=epochs if spec.epochs else 0)


def cost_units(spec: AttackSpec, epochs: int) -> float:
    """An arm's training cost in PGD-7 epochs (the time-left estimate)."""
    return (spec.epochs or epochs) * spec.cost / PGD7_COST
