"""``adcs ui`` in a real browser: headless Chromium renders MLflow's UI for a finished tiny run,
served on 127.0.0.1 only.

The MLflow UI is a JavaScript application: what a user sees exists only once a browser has run
it, so an HTTP check of the API is not enough. Chromium (Debian's ``chromium``, installed by
``make test`` through scripts/get_chromium.sh) loads each page, runs its scripts for up to 20 s
of virtual time, and dumps the rendered DOM; the test then looks for the run, its metrics and
its plots artifact where a user would, and takes a screenshot of the metric charts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from helpers import ROOT, free_port, run_adcs, tiny_args

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.fail("no Chromium on PATH: run `make browser` (scripts/get_chromium.sh; Debian: apt-get install chromium)")
    return found




def _group_cmdlines(pgid: int) -> list[str]:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if os.getpgid(p.pid) == pgid:
                found.append(" ".join(p.info["cmdline"] or []))
        except (ProcessLookupError, psutil.Error):
            pass
    return found


def _get(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.loads(r.read().decode())


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}",
                           "--window-size=1400,900", "--virtual-time-budget=20000", *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _rendered(browser: str, profile: Path, url: str) -> str:
    proc = _chromium(browser, profile, "--dump-dom", url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_ui_shows_the_run_its_metrics_and_plots_in_chromium(tmp_path, mlflow_uri):
    browser = _browser()
    job = run_adcs("train", "--config", "configs/quickstart.yaml", *tiny_args(tmp_path, mlflow_uri))
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]

    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "distributed_adcs.cli", "ui", "--tracking-uri", mlflow_uri,
                           "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, exp = time.time() + 90, None
        while exp is None and time.time() < deadline:
            assert ui.poll() is None, ui.stdout.read().decode()[-2000:]
            try:
                exp = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=quickstart")["experiment"]
            except OSError:
                time.sleep(1)
        assert exp is not None, "the UI did not answer within 90 s"
        import psutil  # it listens on loopback only

        listeners = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listeners and {c.laddr.ip for c in listeners} == {"127.0.0.1"}, listeners
        # and with no MLflow server-side job runner beside it (adcs ui turns it off: cli.SERVER_JOBS_ENV)
        assert not [c for c in _group_cmdlines(ui.pid) if "huey" in c or "_job_runner" in c]
        runs = _get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})
        (run,) = runs["runs"]
        run_id, name = run["info"]["run_id"], run["info"]["run_name"]
        page = f"{base}/#/experiments/{exp['experiment_id']}"
        profile = tmp_path / "chromium-profile"

        table = _rendered(browser, profile, f"{page}/runs")  # MLflow 3 opens an experiment on its GenAI overview
        assert name in table, "the experiment's runs table does not list the run"
        overview = _rendered(browser, profile, f"{page}/runs/{run_id}")
        for text in (name, "Finished", "val_robust_acc", "test_clean_acc", "train_loss"):
            assert text in overview, f"the run page does not show {text!r}"
        artifacts = _rendered(browser, profile, f"{page}/runs/{run_id}/artifacts")
        for folder in ("plots", "checkpoints", "config.yaml"):
            assert folder in artifacts, f"the run's artifacts do not show {folder!r}"

        shot = tmp_path / "metrics.png"
        proc = _chromium(browser, profile, f"--screenshot={shot}", f"{page}/runs/{run_id}/model-metrics")
        assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
        with Image.open(shot) as image:
            assert image.size == (1400, 900)
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is None or len(colours) > 100, "a blank page"  # charts, text, the sidebar
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
