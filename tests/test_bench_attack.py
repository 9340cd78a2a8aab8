"""bench_attack's parts that need no training: every arm's config, the paired bootstrap, the
gradient-masking flag and the targets' choice of arm (the smoke run is in test_bench_quality)."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from quality.arms import arm_config  # noqa: E402
from quality.attack_arms import PGD7_COST, combined, first_specs, to_arm  # noqa: E402
from quality.attack_report import BASELINE, arm_summaries, table, targets  # noqa: E402
from quality.settings import Settings  # noqa: E402
from quality.stats import paired_difference  # noqa: E402


def test_every_arm_is_a_valid_job_config_with_its_objective_averaging_and_guard(tmp_path):
    s = replace(Settings(), store=tmp_path, experiment="bench-attack")
    first = first_specs(40)
    specs = {**first, **combined("nfgsm_k2_ema", first["nfgsm_k2_ema"])}
    for name, spec in specs.items():
        cfg = arm_config(to_arm(name, spec, 40, decay=0.99), 0, s)
        assert (cfg.train.ema_decay == 0.99) == spec.ema, name
        assert cfg.guard.enabled == spec.single_step, name
        assert cfg.mlflow.experiment == "bench-attack"
        assert not cfg.eval.keep_best, name  # the last model is what the report compares
    assert [first[f"pgd7_ema_matched{c}"].epochs for c in (1, 2, 3)] == [5, 10, 15]
    assert first["pgd7_ema"].cost == PGD7_COST and first["nfgsm_k2_ema"].cost == 2
    cfg = arm_config(to_arm("x+random0.5", specs["nfgsm_k2_ema+random0.5"], 40, decay=0.99), 0, s)
    assert (cfg.coreset.method, cfg.coreset.fraction, cfg.objective.name) == ("random", 0.5, "n_fgsm")
    cfg = arm_config(to_arm("x+boundary", specs["nfgsm_k2_ema+boundary"], 40, decay=0.99), 0, s)
    assert cfg.objective.boundary_share == 0.25 and cfg.objective.params.noise_mult == 2


def test_paired_difference_is_the_mean_difference_with_an_interval_around_it():
    rng = np.random.default_rng(1)
    b = rng.random((3, 1000)) < 0.7
    a = b.copy()
    a[:, :50] = True  # a is robust on 50 more images of each seed ...
    a[:, 50:100] = False  # ... and on those 50 not
    flip = ~b[:, :100]
    d = paired_difference(a, b)
    assert d.mean == pytest.approx((flip[:, :50].sum() - b[:, 50:100].sum()) / 3000 * 100)
    assert d.low <= d.mean <= d.high and d.seeds == 3 and d.images == 1000
    same = paired_difference(b, b)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    better = paired_difference(np.ones((3, 500), bool), np.zeros((3, 500), bool))
    assert (better.low, better.high) == (100.0, 100.0)
    with pytest.raises(ValueError, match="same"):
        paired_difference(a, b[:2])


def test_a_difference_the_seeds_disagree_on_gets_a_wider_interval():
    rng = np.random.default_rng(2)
    b = rng.random((3, 1000)) < 0.6
    steady, split = b.copy(), b.copy()
    for s in range(3):
        steady[s, :30] = True
        split[s, : (90 if s == 0 else 0)] = True
    w = lambda d: d.high - d.low  # noqa: E731
    assert w(paired_difference(split, b)) > w(paired_difference(steady, b))


def _row(arm, seed, *, aa, pgd, passes, wall, val, headline=True, fired=False, n=200):
    rng = np.random.default_rng(seed)
    mask = lambda acc: rng.random(n) < acc  # noqa: E731
    return {"arm": arm, "seed": seed, "epochs": 40, "headline": headline, "clean": 0.8, "pgd": pgd,
            "aa": aa if headline else None, "aa_fast": None if headline else aa, "square": None, "val": val,
            "wall": wall, "test_s": 10.0, "passes": passes, "quiet": True, "co_fired": fired, "load": 1.0,
            "masks": {"pgd50": mask(pgd), **({"autoattack": mask(aa)} if headline else {})}, "run_id": "r"}


def test_targets_judge_the_arm_chosen_by_validation_and_flag_masking():
    rows = []
    for seed in range(3):
        rows += [_row(BASELINE, seed, aa=0.70, pgd=0.71, passes=800, wall=410, val=0.70),
                 _row("pgd7_ema_matched2", seed, aa=0.66, pgd=0.67, passes=200, wall=110, val=0.66),
                 # best by validation and 3.2x cheaper: the judged arm, although "masky" tests higher
                 _row("cheap", seed, aa=0.695, pgd=0.70, passes=250, wall=130, val=0.69),
                 _row("masky", seed, aa=0.71, pgd=0.76, passes=250, wall=130, val=0.68, fired=seed == 1),
                 _row("slow", seed, aa=0.72, pgd=0.73, passes=600, wall=300, val=0.72)]
    summaries = arm_summaries(rows)
    verdict = targets(summaries)
    assert "**cheap**" in verdict[0]
    assert verdict[1].startswith("1. >= 2.5x faster within 1.0 point: ")
    text = table(summaries, [BASELINE, "cheap", "masky"])
    masky = next(line for line in text.splitlines() if line.startswith("| masky |"))
    cheap = next(line for line in text.splitlines() if line.startswith("| cheap |"))
    assert "⚠" in masky and "⚠" not in cheap  # 5 points of PGD-50 over AutoAttack against the baseline's 1
    assert "| 1 of 3 |" in masky and "| 0 of 3 |" in cheap
    assert summaries["cheap"]["x_passes"] == pytest.approx(3.2)
    assert summaries["cheap"]["x_train"] == pytest.approx(400 / 120)


def test_a_speed_met_in_passes_with_no_wall_pair_is_not_judged_and_the_table_shows_no_nan():
    # the baseline's only seed was resumed (its wall time is not comparable): the speed-up in
    # passes is known, the one in wall time is not, and the verdict says so instead of MISSED
    rows = [_row(BASELINE, 0, aa=0.70, pgd=0.71, passes=800, wall=410, val=0.70),
            _row("cheap", 0, aa=0.70, pgd=0.70, passes=250, wall=130, val=0.69),
            _row("worse", 0, aa=0.60, pgd=0.61, passes=150, wall=80, val=0.60, headline=False)]
    rows[0]["quiet"] = False
    summaries = arm_summaries(rows)
    verdict = targets(summaries)
    assert "**cheap**" in verdict[0]
    assert verdict[1].startswith("1. >= 2.5x faster within 1.0 point: NOT JUDGED YET (met in passes")
    assert "(- train wall over 1 quiet seed(s), 3.20x passes, - wall" in verdict[1]
    text = table(summaries, [BASELINE, "cheap", "worse"])
    assert "nan" not in text
    assert "| 120 (1) | - | - | 3.20x |" in next(line for line in text.splitlines() if line.startswith("| cheap |"))
    rows[1]["masks"]["autoattack"][:] = False  # far below the baseline: missed whatever the wall time says
    assert targets(arm_summaries(rows))[1].startswith("1. >= 2.5x faster within 1.0 point: MISSED")


def test_a_run_resumed_before_checkpoints_carried_passes_gets_them_summed_and_its_record_rewritten(tmp_path):
    # before 2026-12-07 a resumed run's pass counters began again at zero (the checkpoint did not
    # carry them): the benchmark sums the history's stretches, and a resumed arm's wall time is
    # its last process's only, so the report does not compare it
    import json

    from mlflow.tracking import MlflowClient

    from distributed_adcs.tracking import RunTracker
    from helpers import new_store
    from quality.attack_report import rows_from_mlflow
    from quality.runner import complete_passes

    s = replace(Settings(), store=tmp_path, records=tmp_path / "records", experiment="bench-attack", pgd_steps=3)
    new_store(tmp_path / "mlflow.db")
    tracker = RunTracker(s.uri, s.experiment)
    tracker.start("a-s0", {}, tags={"bench.key": "a-s0", "bench.arm": "a", "bench.seed": "0", "bench.epochs": "4",
                                    "bench.resumed": "True"})
    # cut off after epochs 0 and 2; each resumed process counted from zero (after the first cut
    # its first epoch's count equals the one before it: still a restart)
    counts = [100, 100, 200, 300, 50, 150]
    tracker.log_history({"passes_forward": list(enumerate(counts)), "passes_backward": list(enumerate(counts)),
                         "bench_wall_s": [(0, 10.0)], "bench_cpu_share": [(0, 1.0)]})
    tracker.finish("FINISHED")
    client = MlflowClient(s.uri)
    complete_passes(client, s)
    (row,) = rows_from_mlflow(client, s)
    assert row["passes"] == 2 * (100 + 300 + 150) and not row["quiet"]
    record = json.loads((s.records / "a-s0.json").read_text())
    assert record["metrics"]["bench_passes_forward"] == 550
    complete_passes(client, s)  # once: a run that has them is left alone
    assert len(client.get_metric_history(row["run_id"], "bench_passes_forward")) == 1
