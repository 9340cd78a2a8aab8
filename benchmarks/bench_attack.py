"""Where attack compute pays (issue 24): cheap attacks, weight averaging and coresets against
full PGD-7 adversarial training with weight averaging, paired over seeds.

    .venv/bin/python benchmarks/bench_attack.py              # the benchmark (hours; resumable)
    .venv/bin/python benchmarks/bench_attack.py --smoke      # every arm tiny, the same table (minutes)
    .venv/bin/python benchmarks/bench_attack.py --report     # rebuild the table from MLflow only

It shares bench_quality's machinery (``quality/``: the same base config, runner, records,
``PAUSE`` file and ``--smoke``) and differs by its arms (``quality/attack_arms.py``) and its
report (``quality/attack_report.py``). Phase 0 runs once; phases 1 to 3 run seed by seed (all
of them for the first seed, then for the next), so that a run cut off early has whole seeds of
every arm. In the later seeds the baseline and the phase-3 arms run first, with their published
AutoAttack, so that a run cut off inside a seed still has their pairs:

0. **The weight average's decay**, chosen on the validation split: one full PGD-7 run carries
   an average per candidate decay (``bench_ema.py``); the best by validation robust accuracy
   is every averaging arm's decay. Written to ``--records``/ema_probe.json (kept).
1. **The first arms**: full PGD-7 with averaging (the baseline) and without,
   PGD-7 with averaging at the compute of the cheap arms (fewer epochs: costs 1, 2 and 3 of
   PGD-7's 8), PGD-2, FGSM-RS, N-FGSM (k = 2 and 1) and FGSM-PGI (with and without its
   consistency term), all single-step arms with the CO guard on.
2. **On the best single-step arm** (by validation robust accuracy on the first seed, chosen once
   and kept for the later seeds): extra steps near the
   boundary, random subsets redrawn every epoch at 0.8 and 0.5, CRAIG at 0.5.
3. **Evaluations added from checkpoints**: the published AutoAttack for the two best
   single-step arms and the best combination (by the first seed's validation); after the last
   seed, Square alone for the arm the targets judge.

Every arm is evaluated on the same first ``--test`` test images: PGD-50 with 2 restarts, and
AutoAttack on the first ``--aa-n``: the published standard version for the headline arms (the
baselines, the matched arms, and those of phase 3), torchattacks' 10-iteration version, named
``fast``, elsewhere. Each run keeps every test image's outcome under each attack, so the report
gives paired differences with bootstrap intervals over images and seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality.attack_arms import EXPERIMENT, AttackSpec, combined, cost_units, first_specs, to_arm  # noqa: E402
from quality.attack_report import BASELINE, arm_summaries, judged, report, rows_from_mlflow  # noqa: E402
from quality.records import import_records  # noqa: E402
from quality.runner import complete_headline, complete_passes, run_all  # noqa: E402
from quality.settings import ROOT, Settings, arm_names  # noqa: E402

DEFAULT = replace(Settings(), experiment=EXPERIMENT, store=ROOT / "benchmarks" / "results" / "attack",
                  records=ROOT / "benchmarks" / "attack_records", aa_n=1000)
DECAYS = (0.98, 0.99, 0.995, 0.999)  # the candidates of phase 0
PROBE_FROM = 20  # phase 0 validates every average from this epoch on (of E = 40)


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="every arm tiny (minutes), results in a temporary store")
    ap.add_argument("--report", action="store_true", help="only rebuild the table from the store")
    ap.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; smoke: 0)")
    ap.add_argument("--epochs", type=int, default=DEFAULT.epochs, help="E")
    ap.add_argument("--store", type=Path, default=None,
                    help="MLflow store and checkpoints (default benchmarks/results/attack; smoke: a new temporary one)")
    ap.add_argument("--records", type=Path, default=None,
                    help="finished arms as JSON (default benchmarks/attack_records; smoke: in the store)")
    ap.add_argument("--arms", default=None, help="comma-separated: only these arms in the first phase (default: all; "
                    "phase 2 builds on the best single-step arm among them, if any)")
    ap.add_argument("--set", action="append", default=[], help="extra config override for every arm")
    ap.add_argument("--out", type=Path, default=None, help="markdown results (default docs/results.md; smoke: store)")
    a = ap.parse_args(argv)
    s = replace(DEFAULT, epochs=a.epochs, set=a.set)
    if a.smoke:
        s = replace(s.smoke_sized(), aa_n=8, smoke_autoattack="standard")  # the published one, on 8 images
        a.store = a.store or Path(tempfile.mkdtemp(prefix="bench-attack-smoke-"))
    store = (a.store or DEFAULT.store).resolve()
    records = a.records or (store / "records" if a.smoke else DEFAULT.records)
    s = replace(s, seeds=[int(x) for x in (a.seeds or ("0" if a.smoke else "0,1,2")).split(",")], store=store,
                records=records.resolve(), arms=arm_names(a.arms, list(first_specs(s.epochs))))
    a.out = a.out or (store / "results.md" if a.smoke else ROOT / "docs" / "results.md")
    return a, s


def ema_decay(s: Settings) -> float:
    """Phase 0: the decay every averaging arm uses, chosen on the validation split once and kept."""
    path = s.records / "ema_probe.json"
    if path.exists():
        return float(json.loads(path.read_text())["chosen"])
    import time

    from bench_ema import choose, one_seed, table

    epochs = s.epochs
    print(f"phase 0: choosing the weight average's decay among {DECAYS} (one PGD-7 run of {epochs} epochs)", flush=True)
    t0 = time.perf_counter()
    overrides = (f"data.val_size={s.val}", *s.set)
    results = {s.seeds[0]: one_seed(s.seeds[0], epochs, s.n, min(PROBE_FROM, epochs - 1), decays=DECAYS,
                                    config=str(s.base), overrides=overrides)}
    chosen = choose(results)
    if chosen == "off":  # no average beat the raw weights: the smallest decay, said so in the record
        print("phase 0: no decay beat the raw weights on validation; the arms average with the smallest", flush=True)
    decay = DECAYS[0] if chosen == "off" else float(chosen)
    s.records.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"chosen": decay, "best_arm": chosen, "decays": DECAYS, "epochs": epochs, "n": s.n,
                                "seconds": time.perf_counter() - t0, "table": table(results),
                                "rows": {str(k): v for k, v in results.items()}}, indent=1) + "\n")
    print(table(results), flush=True)
    print(f"phase 0: decay {decay} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return decay


def best_by_validation(client, s: Settings, names: list[str], k: int) -> list[str]:
    """The ``k`` arms of ``names`` with the best final validation robust accuracy on the first
    seed (``s.seeds[0]``): chosen once, so that every later seed runs the same arms."""
    from quality.records import finished, runs

    score = {}
    for name in names:
        vals = [r.data.metrics.get("val_robust_acc") for r in runs(client, s.experiment)
                if finished(r) and r.data.tags.get("bench.arm") == name
                and r.data.tags.get("bench.seed") == str(s.seeds[0])]
        vals = [v for v in vals if v is not None]
        if vals:
            score[name] = sum(vals) / len(vals)
    return sorted(score, key=score.__getitem__, reverse=True)[:k]


def main() -> int:
    a, s = parse()
    s.store.mkdir(parents=True, exist_ok=True)
    from distributed_adcs.engine.runtime import raise_on_sigterm

    raise_on_sigterm()  # as adcs train: a SIGTERM marks the running arm's run KILLED, resumable
    from common import header
    from mlflow.tracking import MlflowClient

    from distributed_adcs.progress import set_quiet
    from distributed_adcs.tracking import RunTracker

    set_quiet(True)
    RunTracker(s.uri, s.experiment)
    client = MlflowClient(s.uri)
    print(header("bench_attack: attack compute against full PGD-7 with weight averaging", len(s.seeds)), flush=True)
    n = import_records(client, s.uri, s.experiment, s.records)
    if n:
        print(f"imported {n} finished arms from {s.records}", flush=True)
    complete_passes(client, s)  # runs that finished before the runner summed their passes
    first = {name: spec for name, spec in first_specs(s.epochs).items() if s.arms is None or name in s.arms}
    order = list(first)
    if not a.report:
        decay = ema_decay(s)
        specs: dict[str, AttackSpec] = dict(first)
        arm = lambda name, headline=None: to_arm(name, specs[name], s.epochs, decay=decay, headline=headline)  # noqa: E731
        cost = {name: cost_units(spec, s.epochs) for name, spec in first.items()}
        single = [name for name, spec in first.items() if spec.single_step]
        best: list[str] | None = None
        more: dict[str, AttackSpec] = {}
        headline: list = []
        for i, seed in enumerate(s.seeds):  # seed-major through the phases: a cut-off run has whole seeds
            one = replace(s, seeds=[seed])
            later = len(s.seeds) - i - 1  # (the time-left estimate counts the later seeds' arms)
            if best is not None:  # a later seed: the baseline and the judged arms first, with their
                # published AutoAttack, so that a run cut off inside the seed has their pairs
                key = {BASELINE, *(h.name for h in headline)}
                names = [*first, *more]
                judged_first = [n for n in names if n in key]
                ablations = [n for n in names if n not in key]
                run_all([arm(name) for name in judged_first], one, client, cost=lambda x: cost[x.name],
                        after=later * sum(cost.values()) + sum(cost[n] for n in ablations))
                complete_headline(client, headline, one)
                run_all([arm(name) for name in ablations], one, client, cost=lambda x: cost[x.name],
                        after=later * sum(cost.values()))
                continue
            run_all([arm(name) for name in first], one, client, cost=lambda x: cost[x.name],
                    after=later * sum(cost[name] for name in first))
            best = best_by_validation(client, s, single, 2)  # chosen on the first seed's validation, then fixed
            print(f"best single-step arms (validation robust accuracy, seed {seed}): "
                  f"{', '.join(best) or 'none run'}", flush=True)
            more = combined(best[0], first[best[0]]) if best else {}
            specs.update(more)
            cost.update({name: cost_units(spec, s.epochs) for name, spec in more.items()})
            order += list(more)
            run_all([arm(name) for name in more], one, client, cost=lambda x: cost[x.name],
                    after=later * sum(cost.values()))
            best_combo = best_by_validation(client, s, list(more), 1)
            headline = [arm(name, headline=True) for name in dict.fromkeys([*best, *best_combo])]
            complete_headline(client, headline, one)  # the published AutoAttack from their checkpoints
        top = judged(arm_summaries(rows_from_mlflow(client, s)))  # the arm the targets judge
        complete_headline(client, [arm(top, headline=True)] if top else [], s, version="square")
    else:
        single = [name for name, spec in first.items() if spec.single_step]
        best = best_by_validation(client, s, single, 1)
        order += list(combined(best[0], first[best[0]])) if best else []
    report(client, s, a.out, order, f"python benchmarks/bench_attack.py{' --smoke' if s.smoke else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
