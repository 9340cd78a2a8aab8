"""The benchmarks' --smoke runs (bench_quality and bench_attack, on a few arms each): every phase,
the table, the targets, and a rerun that skips what finished, also on another machine from the
committed records (the benchmarks themselves take hours; these are their tiny twins). And one
arm run in-process: resumed when it can be, started again when it cannot (an explicit result),
and its own error when it fails."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient

from helpers import ROOT, new_store

sys.path.insert(0, str(ROOT / "benchmarks"))
from quality.arms import ARMS as ARM_SPECS  # noqa: E402
from quality.arms import arm  # noqa: E402
from quality.records import runs  # noqa: E402
from quality.runner import run_arm  # noqa: E402
from quality.settings import EXPERIMENT, Settings  # noqa: E402

ARMS = ["full", "full_matched", "random_once", "random_every", "craig", "gradmatch", "adaptive"]


def test_the_arms_are_the_registry_in_table_order():
    assert list(ARM_SPECS) == ARMS


def _one_epoch(tmp_path) -> tuple[Settings, MlflowClient]:
    """The smoke sizes, one seed, and a store with the benchmark's experiment."""
    from distributed_adcs.tracking import RunTracker

    s = replace(Settings(seeds=[0]).smoke_sized(), store=tmp_path, records=tmp_path / "records")
    new_store(tmp_path / "mlflow.db")
    RunTracker(s.uri, EXPERIMENT)
    return s, MlflowClient(s.uri)


def test_an_arm_cut_off_before_its_first_checkpoint_starts_again_and_one_after_it_resumes(tmp_path):
    s, client = _one_epoch(tmp_path)
    full = arm("full", 1.0, 1, headline=True)
    name = full.run_name(0)
    # what an arm cut off in its first epoch leaves: its run, unfinished, untagged, no checkpoint
    cut = client.create_run(client.get_experiment_by_name(EXPERIMENT).experiment_id, run_name=name)
    assert run_arm(full, 0, s, client) == "ran"
    assert client.get_run(cut.info.run_id).info.status == "FAILED"  # resume impossible: said so, and marked
    (fresh,) = [r for r in runs(client, EXPERIMENT, name) if r.info.run_id != cut.info.run_id]
    assert fresh.info.status == "FINISHED" and fresh.data.tags["bench.key"] == name
    assert fresh.data.tags["bench.resumed"] == "False" and "test_clean_acc" in fresh.data.metrics
    # cut off after its checkpoint: the same run continues (here with no epoch left)
    client.set_terminated(fresh.info.run_id, status="KILLED")
    assert run_arm(full, 0, s, client) == "resumed"
    again = client.get_run(fresh.info.run_id)
    assert again.info.status == "FINISHED" and again.data.tags["bench.resumed"] == "True"
    assert len(runs(client, EXPERIMENT, name)) == 2 and run_arm(full, 0, s, client) == "finished"


def test_a_fresh_arm_that_fails_shows_its_own_error(tmp_path):
    from distributed_adcs.config import UsageError

    s, client = _one_epoch(tmp_path)
    (tmp_path / "a-file").write_text("")
    s = replace(s, set=[*s.set, f"train.output_dir={tmp_path / 'a-file' / 'runs'}"])  # not a directory
    with pytest.raises(UsageError, match="^train.output_dir: "):
        run_arm(arm("full", 1.0, 1, headline=True), 0, s, client)
    assert runs(client, EXPERIMENT, "full-f1-E1-s0") == []


# Each smoke run below takes a few of the arms (--arms), the machinery whole: every phase, the
# records, resume, import and the report. Every arm's config is checked without training
# (test_the_arms_are_the_registry_in_table_order, test_bench_attack.py); `--smoke` alone runs
# every arm (4 to 10 minutes here). The timeouts are hang guards, not speed checks.
SMOKE_ARMS = ["full", "full_matched", "random_every"]


@pytest.mark.timeout(1800)
def test_smoke_runs_every_phase_prints_the_table_and_resumes(tmp_path):
    cmd = [sys.executable, "benchmarks/bench_quality.py", "--smoke", "--seeds", "0", "--store", str(tmp_path),
           "--arms", ",".join(SMOKE_ARMS)]
    new_store(tmp_path / "mlflow.db"), new_store(tmp_path / "elsewhere" / "mlflow.db")
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    for name in SMOKE_ARMS:
        assert f"| 3 | {'1' if name.startswith('full') else '0.3'} | {name} | 1 |" in out, name
    assert "| 3 | 0.1 | random_every |" in out and "| 2 | 1 | full |" in out  # fractions and the short schedule
    assert "1. >= 2.5x faster than full AT:" in out and "4. beats compute-matched full AT" in out
    results = (tmp_path / "results.md").read_text()
    assert results.startswith("# bench_quality results\n\n<!-- bench_quality: begin (generated) -->\nBest subset arm")
    assert (tmp_path / "results_quality.png").stat().st_size > 10_000
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = [line for line in again.stdout.splitlines() if line.startswith("[")]
    assert lines and all(": finished in" in line for line in lines)  # nothing ran twice
    # another machine: a fresh store, the records of the first: every arm is imported, none runs
    records = sorted(p.name for p in (tmp_path / "records").glob("*.json"))
    assert len(records) == len(lines), records
    elsewhere = tmp_path / "elsewhere"
    third = subprocess.run([*cmd[:6], str(elsewhere), *cmd[7:], "--records", str(tmp_path / "records")], cwd=ROOT,
                           capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"imported {len(records)} finished arms" in third.stdout
    assert all(": finished in" in line for line in third.stdout.splitlines() if line.startswith("["))
    table = lambda text: [line for line in text.splitlines() if line.startswith("| ")]  # noqa: E731
    assert table(third.stdout) == table(out)  # the same table, rebuilt from the imported runs
    # a results file with prose around the markers: the report replaces only what is between
    prose = tmp_path / "prose.md"
    prose.write_text("# mine\n\n<!-- bench_quality: begin (generated) -->\nold\n<!-- bench_quality: end -->\n\n## kept\n")
    again = subprocess.run([*cmd, "--report", "--out", str(prose)], cwd=ROOT, capture_output=True, text=True,
                           timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr[-3000:]
    text = prose.read_text()
    assert text.startswith("# mine\n\n<!-- bench_quality: begin (generated) -->\nBest subset arm") and "old" not in text
    assert text.endswith("<!-- bench_quality: end -->\n\n## kept\n") and table(text) == table(out)
    bad = subprocess.run([*cmd[:-1], "full,fulll"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert bad.returncode != 0 and "--arms: unknown arm(s) fulll" in bad.stderr


@pytest.mark.timeout(1800)
def test_attack_smoke_runs_every_phase_with_paired_intervals_and_resumes(tmp_path):
    # the baseline and one single-step arm: phase 0 (the decay), phase 1, phase 2 on that arm
    # (extra steps, random 0.8 and 0.5, CRAIG 0.5), the published AutoAttack and Square added
    # from checkpoints, the report; then a rerun that runs nothing and gives the same table
    cmd = [sys.executable, "benchmarks/bench_attack.py", "--smoke", "--store", str(tmp_path),
           "--arms", "pgd7_ema,nfgsm_k2_ema"]
    new_store(tmp_path / "mlflow.db")
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "phase 0: decay " in out and (tmp_path / "records" / "ema_probe.json").exists()
    report = out[out.index("| arm |"):]  # (phase 0 printed its own table of decays before)
    rows = {line.split(" | ")[0][2:]: line for line in report.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"arm", "pgd7_ema", "nfgsm_k2_ema", "nfgsm_k2_ema+boundary", "nfgsm_k2_ema+random0.8",
                         "nfgsm_k2_ema+random0.5", "nfgsm_k2_ema+craig0.5"}, sorted(rows)
    # the baseline is paired with itself exactly; the single-step arm got the published AutoAttack
    # after it ran, from its checkpoint, and its interval is a real one around its mean
    assert "| +0.00 [+0.00, +0.00] | +0.00 [+0.00, +0.00] |" in rows["pgd7_ema"]
    assert "nfgsm_k2_ema-f1-E3 seed 0: standard evaluation added" in out
    assert "square evaluation added" in out and "Square alone: 0." in out
    assert out.count("4. guards: ") == 1
    records = sorted(p.name for p in (tmp_path / "records").glob("*-s0.json"))
    assert len(records) == 6
    rec = json.loads((tmp_path / "records" / "nfgsm_k2_ema-f1-E3-s0.json").read_text())
    assert {"test_outcomes.json", "evaluate_standard_outcomes.json"} <= set(rec["outcomes"])
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(": finished in" in line for line in again.stdout.splitlines() if line.startswith("["))
    assert "evaluation added" not in again.stdout
    table = lambda text: [line for line in text[text.index("| arm |"):].splitlines()  # noqa: E731
                          if line.startswith("| ") and "train s" not in line]
    assert [line.split(" | ")[:10] for line in table(again.stdout)] == [line.split(" | ")[:10] for line in table(out)]
