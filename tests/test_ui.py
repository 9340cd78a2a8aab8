"""adcs ui serves the run store over HTTP on 127.0.0.1 only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from helpers import ROOT, free_port, run_adcs




def test_ui_refuses_a_missing_store(tmp_path):
    proc = run_adcs("ui", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}")
    assert proc.returncode == 2 and "no MLflow store" in proc.stderr


def test_ui_serves_on_loopback_only(tmp_path, mlflow_uri):
    from distributed_adcs.tracking import RunTracker

    tracker = RunTracker(mlflow_uri, "ui-check")
    tracker.start("a-run", {"x": 1})
    tracker.finish()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distributed_adcs.cli", "ui", "--tracking-uri", mlflow_uri,
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ}, start_new_session=True)
    try:
        deadline, body = time.time() + 240, None
        while time.time() < deadline and body is None:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name"
                                            f"?experiment_name=ui-check", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(1)
        assert body is not None and "ui-check" in body
        import psutil

        listeners = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listeners and {c.laddr.ip for c in listeners} == {"127.0.0.1"}, listeners
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
