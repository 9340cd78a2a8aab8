"""Does a coreset earn its keep? Every arm of adversarial training, paired over seeds.

    .venv/bin/python benchmarks/bench_quality.py              # the benchmark (hours; resumable)
    .venv/bin/python benchmarks/bench_quality.py --smoke      # every arm tiny, the same table (minutes)
    .venv/bin/python benchmarks/bench_quality.py --probe      # full AT's validation curve, to choose --epochs
    .venv/bin/python benchmarks/bench_quality.py --report     # rebuild the table from MLflow only

Arms (one MLflow run each, experiment ``bench-quality`` in ``--store``): full adversarial
training for E epochs; full AT with the compute of the subset arms (fewer epochs); random drawn
once; random redrawn every epoch (RS2); CRAIG; GradMatch; adaptive. All at fraction 0.3, then
0.1 and 0.2 for the two best subset arms (chosen on the validation split), then full, random
redrawn and the best arm at a short schedule. Every arm runs for every seed; seeds pair arms.
The arms are ``quality/arms.py``'s ``ARMS`` (a new arm is one entry there); every arm's config is
``quality/base.yaml`` (the benchmark's own, not the quickstart) with the arm's settings over it.

Resumable: a finished arm is skipped, an arm cut off mid-way resumes from its last checkpoint
(``adcs train --resume``), and one cut off before its first checkpoint starts again. Every finished arm is also written to ``--records`` (default
``benchmarks/quality_records/``, committed): a JSON file with its tags, final metrics and
curves, which a run on another machine imports into its MLflow store as a finished run, so a
benchmark spread over several machines (or sessions) still skips what is done. While a file
``PAUSE`` exists in the store, no new arm starts (to run something else between arms). Each
arm prints one line with an estimate of the time left. Every arm is evaluated on the same
first ``--test`` test images: PGD-50 with 2 restarts, and AutoAttack: the published standard
version for the headline arms (every arm at fraction 0.3 and E; at 0.1 and 0.2 the best arm
and random redrawn; the short schedule), torchattacks' 10-iteration version, named ``fast``,
for the others; arms that ran ``fast`` before they became headline get the published one
added from their checkpoint. Cost is wall time and passes through the model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality.arms import ARMS, Arm, first_arms, later_arms  # noqa: E402
from quality.records import import_records  # noqa: E402
from quality.report import best_subset_arms, probe_report, report, rows_from_mlflow, summary  # noqa: E402
from quality.runner import complete_headline, run_all  # noqa: E402
from quality.settings import ROOT, Settings, arm_names  # noqa: E402

DEFAULT = Settings()


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="every arm tiny (minutes), results in a temporary store")
    ap.add_argument("--probe", action="store_true", help="only full AT's validation curve at --probe-epochs")
    ap.add_argument("--report", action="store_true", help="only rebuild the table from the store")
    ap.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; smoke: 0,1)")
    ap.add_argument("--n", type=int, default=DEFAULT.n, help="training images")
    ap.add_argument("--val", type=int, default=DEFAULT.val, help="validation images (choices are made on these)")
    ap.add_argument("--test", type=int, default=DEFAULT.test, help="test images every arm is evaluated on")
    ap.add_argument("--epochs", type=int, default=DEFAULT.epochs, help="E (chosen with --probe: docs/results.md)")
    ap.add_argument("--short", type=int, default=DEFAULT.short, help="the short schedule")
    ap.add_argument("--warmup", type=int, default=DEFAULT.warmup)
    ap.add_argument("--val-every", type=int, default=DEFAULT.val_every)
    ap.add_argument("--pgd-steps", type=int, default=DEFAULT.pgd_steps)
    ap.add_argument("--aa-n", type=int, default=DEFAULT.aa_n,
                    help="test images given to AutoAttack (the first of --test)")
    ap.add_argument("--probe-epochs", type=int, default=DEFAULT.probe_epochs)
    ap.add_argument("--store", type=Path, default=None,
                    help="MLflow store and checkpoints (default benchmarks/results/quality; smoke: a new temporary one)")
    ap.add_argument("--records", type=Path, default=None,
                    help="finished arms as JSON (default benchmarks/quality_records; smoke: in the store)")
    ap.add_argument("--arms", default=None, help="comma-separated: only these arms in the first phase (default: all)")
    ap.add_argument("--set", action="append", default=[], help="extra config override for every arm")
    ap.add_argument("--out", type=Path, default=None, help="markdown results (default docs/results.md; smoke: store)")
    a = ap.parse_args(argv)
    s = Settings(**{f.name: getattr(a, f.name) for f in fields(Settings)
                    if f.name not in ("seeds", "store", "records", "smoke", "experiment", "base", "arms",
                                      "smoke_autoattack")})
    if a.smoke:  # the smoke sizes replace the flags' (as they always have)
        s = s.smoke_sized()
        a.store = a.store or Path(tempfile.mkdtemp(prefix="bench-quality-smoke-"))
    store = (a.store or DEFAULT.store).resolve()
    records = a.records or (store / "records" if a.smoke else DEFAULT.records)
    s = replace(s, seeds=[int(x) for x in (a.seeds or ("0,1" if a.smoke else "0,1,2")).split(",")], store=store,
                records=records.resolve(), arms=arm_names(a.arms, list(ARMS)))
    a.out = a.out or (store / "results.md" if a.smoke else ROOT / "docs" / "results.md")
    return a, s


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
    RunTracker(s.uri, s.experiment)  # creates the store and experiment once, before any arm
    client = MlflowClient(s.uri)
    print(header("bench_quality: coreset arms against full adversarial training", len(s.seeds)), flush=True)
    if a.probe:  # the probe is no arm of the table: it keeps to the store
        s = s.for_probe()
    n = import_records(client, s.uri, s.experiment, s.records)
    if n:
        print(f"imported {n} finished arms from {s.records}", flush=True)
    if a.probe:
        arm = Arm("probe_full", "full", 1.0, s.probe_epochs, 1)
        run_all([arm], s, client)
        probe_report(client, arm, s, a.out.with_name("probe_full.png"))
        return 0
    if not a.report:
        # while this machine has their checkpoints (a smoke run tests with the fast version only)
        complete_headline(client, [] if s.smoke else first_arms(s.epochs, s.warmup, names=s.arms), s)
        run_all(first_arms(s.epochs, s.warmup, names=s.arms), s, client)
        _, means = summary(rows_from_mlflow(client, s.experiment))
        best = best_subset_arms(means, s.epochs)
        if best:  # (none when --arms named no subset arm)
            print(f"best subset arms at fraction 0.3 (validation robust accuracy): {', '.join(best)}", flush=True)
            run_all(later_arms(best, s.epochs, s.short, s.warmup), s, client)
    report(client, s, a.out, f"python benchmarks/bench_quality.py{' --smoke' if s.smoke else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
