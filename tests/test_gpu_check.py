"""scripts/gpu_check.py runs its every step (tiny, on the CPU) so that the one command a GPU
session gets does not fail on its own bugs; the GPU numbers themselves come only from a GPU."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT


def test_gpu_check_steps_run_on_the_cpu():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "bf16 speed-up per epoch" in out
    # (in-process on the CPU: no Train worker to kill; the row's own commands run all the same)
    assert "worker died: False, run FINISHED, epochs logged [0, 1, 2]" in out
    assert "same run: True, FINISHED, epochs logged [0, 1, 2, 3]" in out
    assert "CRAIG greedy, n = 4000" in out
