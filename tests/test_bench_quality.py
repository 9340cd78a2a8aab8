"""The quality benchmark's --smoke run: every arm, the table, the targets, and a rerun that
skips what finished, also on another machine from the committed records (the benchmark itself
takes hours; this is its tiny twin)."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT

ARMS = ["full", "full_matched", "random_once", "random_every", "craig", "gradmatch", "adaptive"]


def test_smoke_runs_every_arm_prints_the_table_and_resumes(tmp_path):
    cmd = [sys.executable, "benchmarks/bench_quality.py", "--smoke", "--seeds", "0", "--store", str(tmp_path)]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    for arm in ARMS:
        assert f"| 3 | {'1' if arm.startswith('full') else '0.3'} | {arm} | 1 |" in out, arm
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
