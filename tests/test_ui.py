"""adcs ui refuses a store that is not there (that it serves one on 127.0.0.1 only, and what a
browser then shows: test_ui_browser.py)."""

from __future__ import annotations

from helpers import run_adcs


def test_ui_refuses_a_missing_store(tmp_path):
    proc = run_adcs("ui", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}")
    assert proc.returncode == 2 and "no MLflow store" in proc.stderr
