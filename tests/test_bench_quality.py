"""The quality benchmark's --smoke run: every arm, the table, the targets, and a rerun that
skips what finished, also on another machine from the committed records (the benchmark itself
takes hours; this is its tiny twin). And one arm run in-process: resumed when it can be,
started again when it cannot (an explicit result), and its own error when it fails."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient

from helpers import ROOT

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


# the smoke run of every arm took 579 s here at load 4 to 7 (2026-12-06) and past 600 s at load 15: a
# hang guard, not a speed check, so it leaves room for a busy CI machine
@pytest.mark.timeout(2400)
def test_smoke_runs_every_arm_prints_the_table_and_resumes(tmp_path):
    cmd = [sys.executable, "benchmarks/bench_quality.py", "--smoke", "--seeds", "0", "--store", str(tmp_path)]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    for name in ARMS:
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
    third = subprocess.run([*cmd[:-1], str(elsewhere), "--records", str(tmp_path / "records")], cwd=ROOT,
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
