"""The arms of bench_quality, and the config of one arm for one seed.

A new arm is one entry of :data:`ARMS`. It then runs for every seed in the first phase (a
subset arm at fraction 0.3 with the published AutoAttack, a full-data arm on all the data), is
a row of the table, and a subset arm competes for "best arm", which the later phases run at
fractions 0.1 and 0.2 and at the short schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .settings import Settings


@dataclass(frozen=True)
class ArmSpec:
    """What an arm trains, beyond the settings every arm shares."""

    method: str  # coreset.method; "full": every example every epoch
    every: int = 1  # epochs between selections (capped at the arm's epochs)
    set: tuple[str, ...] = field(default=())  # the arm's own config overrides (objective, averaging, ...)
    matched: bool = False  # full data for the training compute of a subset arm: fewer epochs, compared at E

    def __post_init__(self) -> None:
        if self.matched and self.subset:
            raise ValueError("a compute-matched arm trains on the full data (method 'full')")

    @property
    def subset(self) -> bool:
        return self.method != "full"


ARMS: dict[str, ArmSpec] = {  # table order; a subset arm competes for "best"
    "full": ArmSpec("full"),
    "full_matched": ArmSpec("full", matched=True),
    "random_once": ArmSpec("random", every=10**6),  # drawn once, after the warm-up
    "random_every": ArmSpec("random"),  # redrawn every epoch (RS2)
    "craig": ArmSpec("craig", every=3),
    "gradmatch": ArmSpec("gradmatch", every=3),
    "adaptive": ArmSpec("adaptive"),
}
SUBSET_ARMS = tuple(name for name, spec in ARMS.items() if spec.subset)


@dataclass(frozen=True)
class Arm:
    """One arm at one fraction and schedule: one MLflow run per seed."""

    name: str  # what the table calls it
    method: str
    fraction: float
    epochs: int
    every: int
    headline: bool = False  # evaluated with the published AutoAttack
    extra: tuple[str, ...] = field(default=())  # config overrides after every other
    schedule: int = 0  # the E this arm is compared at (full_matched runs fewer epochs); 0: its own

    @property
    def compared_at(self) -> int:
        return self.schedule or self.epochs

    @property
    def key(self) -> str:
        return f"{self.name}-f{self.fraction:g}-E{self.compared_at}"

    def run_name(self, seed: int) -> str:
        """The arm's MLflow run name for ``seed``, also its record's name and its ``bench.key`` tag."""
        return f"{self.key}-s{seed}"


def arm(name: str, fraction: float, epochs: int, *, headline: bool, schedule: int = 0,
        extra: tuple[str, ...] = ()) -> Arm:
    """The arm ``ARMS[name]`` at ``fraction`` for ``epochs``."""
    spec = ARMS[name]
    return Arm(name, spec.method, fraction, epochs, min(spec.every, epochs), headline, (*spec.set, *extra), schedule)


def matched_epochs(epochs: int, warmup: int, fraction: float) -> int:
    """Full-data epochs with the training compute of a subset arm: warm-up plus the subset epochs."""
    return max(1, round(warmup + fraction * (epochs - warmup)))


def first_arms(epochs: int, warmup: int, fraction: float = 0.3, names: list[str] | None = None) -> list[Arm]:
    """Every arm (or those ``names``) at E. Every one of them gets the published AutoAttack: the
    best subset arm is only known once they have run, and it is compared with full AT under the
    same attack."""
    arms = []
    for name, spec in ARMS.items():
        if names is not None and name not in names:
            continue
        if spec.matched:
            arms.append(arm(name, 1.0, matched_epochs(epochs, warmup, fraction), headline=True, schedule=epochs))
        else:
            arms.append(arm(name, fraction if spec.subset else 1.0, epochs, headline=True))
    return arms


def later_arms(best: list[str], epochs: int, short: int, warmup: int) -> list[Arm]:
    """0.1 and 0.2 for the two best subset arms and for random redrawn (target 3 compares them),
    then the short schedule."""
    names = list(dict.fromkeys([*best, "random_every"]))
    arms = [arm(name, f, epochs, headline=name in (best[0], "random_every")) for f in (0.1, 0.2) for name in names]
    w = min(warmup, short - 1)
    arms += [arm("full", 1.0, short, headline=True)]
    arms += [arm(name, 0.3, short, headline=True, extra=(f"coreset.warmup_epochs={w}",))
             for name in dict.fromkeys(["random_every", best[0]])]
    return arms


def cost_units(arm: Arm, warmup: int) -> float:
    """Rough training cost in full epochs (for the time-left estimate)."""
    if arm.method == "full":
        return arm.epochs
    return warmup + arm.fraction * (arm.epochs - warmup) + 1.5


def overrides(arm: Arm, seed: int, s: Settings) -> list[str]:
    """The arm's settings over ``s.base``; ``s.set`` applies to every arm, then the arm's own."""
    aa = (s.smoke_autoattack if s.smoke else "standard") if arm.headline else "fast"
    return [f"seed={seed}", f"data.limit={s.n}", f"data.val_size={s.val}",
            f"coreset.method={arm.method}", f"coreset.fraction={arm.fraction}", f"coreset.every={arm.every}",
            f"coreset.warmup_epochs={s.warmup}", f"train.epochs={arm.epochs}", f"eval.val_every={s.val_every}",
            f"eval.test_limit={s.test}", f"eval.pgd_steps={s.pgd_steps}", f"eval.autoattack_n={s.aa_n}",
            f"eval.autoattack_version={aa}", f"mlflow.tracking_uri={s.uri}", f"mlflow.experiment={s.experiment}",
            f"mlflow.run_name={arm.run_name(seed)}", f"train.output_dir={s.store / 'runs'}", *s.set, *arm.extra]


def arm_config(arm: Arm, seed: int, s: Settings):
    """The job config of ``arm`` for ``seed``."""
    from distributed_adcs.config import load_config

    return load_config(s.base, overrides(arm, seed, s))
