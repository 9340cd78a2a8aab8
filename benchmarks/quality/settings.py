"""What every arm of bench_quality shares: data sizes, schedule, evaluation, and where results
go. ``bench_quality.py`` fills it from its flags; the defaults are the benchmark's."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "bench-quality"  # the MLflow experiment of every arm of bench_quality
BASE = Path(__file__).with_name("base.yaml")  # what every arm shares; not configs/quickstart.yaml


@dataclass
class Settings:
    n: int = 10000  # training images
    val: int = 1000  # validation images (choices are made on these)
    test: int = 1000  # test images every arm is evaluated on
    epochs: int = 40  # E (chosen with --probe: docs/results.md)
    short: int = 12  # the short schedule
    warmup: int = 2  # full-data epochs before the first coreset
    val_every: int = 2  # epochs between validations
    pgd_steps: int = 50  # the final test's PGD
    aa_n: int = 500  # test images given to AutoAttack (the first of ``test``)
    probe_epochs: int = 60
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    store: Path = ROOT / "benchmarks" / "results" / "quality"  # MLflow store, checkpoints, logs
    records: Path = ROOT / "benchmarks" / "quality_records"  # finished arms as JSON (committed)
    set: list[str] = field(default_factory=list)  # extra config overrides for every arm
    smoke: bool = False  # every arm tiny
    smoke_autoattack: str = "fast"  # the AutoAttack version of a smoke run's headline arms
    arms: list[str] | None = None  # the first phase's arms (None: all); the later phases follow from them
    experiment: str = EXPERIMENT  # the MLflow experiment of the arms (one per benchmark)
    base: Path = BASE  # the config every arm's settings go over

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.store / 'mlflow.db'}"

    def smoke_sized(self) -> Settings:
        """Every arm tiny (minutes for the whole benchmark), the same table."""
        return replace(self, n=384, val=128, test=128, epochs=3, short=2, warmup=1, pgd_steps=3, aa_n=8, val_every=1,
                       probe_epochs=3, smoke=True,
                       # (logging the models costs each tiny arm seconds: docs/measurements.md; real arms log them;
                       # Square's 5,000 queries were half of the attack smoke's time: a tiny model's robust
                       # images each take every one of them)
                       set=[*self.set, "objective.steps=2", "eval.val_pgd_steps=2", "data.batch_size=64",
                            "mlflow.log_model=false", "eval.square_queries=100"])

    def for_probe(self) -> Settings:
        """Full AT's validation curve: every epoch, one seed; its records stay in the store."""
        return replace(self, val_every=1, seeds=self.seeds[:1], records=self.store / "records")


def arm_names(text: str | None, known: list[str]) -> list[str] | None:
    """``--arms a,b``: those names, each checked against ``known`` (None: every arm)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"--arms: unknown arm(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(known)}")
    return names
