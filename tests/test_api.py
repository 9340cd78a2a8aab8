"""The Python API (``distributed_adcs.api``): the README's notebook example runs as it stands, the
calling process is left as it was found, and ``load_model`` gives back the model the job tested.

The example runs in a fresh process (Jupyter is not a dependency): the README's block between a
prologue that notes the process's state and an epilogue that checks it, on a tiny copy of
``configs/quickstart.yaml`` whose selection runs on a Ray actor, so the job starts a local Ray
(whose ``ray.init`` installs a SIGTERM handler and prints its own lines).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import ROOT, TINY, new_store
from test_console import job_lines

ACTORS = ["ray.num_workers=0", "ray.num_actors=1", "ray.cpus_per_actor=1", "coreset.method=craig",
          "coreset.warmup_epochs=1", "coreset.every=1", "coreset.fraction=0.5"]


def readme_example() -> str:
    """The first ``python`` block of the README's *Python API* section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


PROLOGUE = """
import random, signal, sys
import numpy, torch
noted = lambda: (random.getstate(), numpy.random.get_state()[1].tolist(), torch.get_rng_state().tolist(),
                 torch.are_deterministic_algorithms_enabled())
def mine(signum, frame):
    pass
signal.signal(signal.SIGTERM, mine)
before = noted(), signal.getsignal(signal.SIGINT)
"""

EPILOGUE = """
import json
from distributed_adcs.engine.build import load_job_splits
assert noted() == before[0], "the random streams or torch's deterministic mode changed"
assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is before[1]
assert sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
test = load_job_splits(cfg).test  # what the job tested: eval.test_limit images
with torch.no_grad():
    clean = (model(test.float_images(torch.arange(len(test)))).argmax(1) == test.labels).float().mean().item()
again = adcs.evaluate(run.run_id, tracking_uri=run.tracking_uri)
print("CHECKED " + json.dumps({"run": run.__dict__ | {"log": str(run.log)}, "clean": clean, "again": again}))
"""


def test_readme_example_runs_and_leaves_the_process_as_found(tmp_path):
    from distributed_adcs.config import dump_yaml, load_config

    # the README's relative paths, in a directory of the test's own: a tiny config, a new store
    (tmp_path / "configs").mkdir()
    tiny = load_config(ROOT / "configs" / "quickstart.yaml", [*TINY, *ACTORS])
    (tmp_path / "configs" / "quickstart.yaml").write_text(dump_yaml(tiny))
    uri = new_store(tmp_path / "mlflow.db")
    script = PROLOGUE + readme_example() + EPILOGUE
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    import json

    checked = json.loads(proc.stdout.rsplit("CHECKED ", 1)[1])
    run = checked["run"]
    assert run["status"] == "FINISHED" and run["experiment"] == "quickstart" and run["tracking_uri"] == uri
    assert run["artifact_uri"].startswith((tmp_path / "mlartifacts").as_uri())
    # the model load_model rebuilt is the one the job tested: the same clean accuracy, and the
    # same numbers again from evaluate
    assert checked["clean"] == pytest.approx(run["metrics"]["test_clean_acc"], abs=1e-9)
    for key in ("test_clean_acc", "test_pgd3_acc"):
        assert checked["again"][key] == pytest.approx(run["metrics"][key], abs=1e-9)

    # the console: the job's own lines and the example's print, not Ray's (those are in the run's log)
    ours = [*job_lines("quickstart", 3), re.compile(r"^  Ray's and Train's log: \S+adcs\.log \(artifact logs/adcs\.log\)$"),
            re.compile(rf"^{run['run_id']} FINISHED \S+$"), re.compile(r"^CHECKED ")]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    strays = [line for line in lines if not any(p.match(line) for p in ours)]
    assert not strays, "lines that are not ours:\n" + "\n".join(strays[:20])
    assert sum(line.startswith("epoch ") for line in lines) == 3
    log = Path(run["log"])
    assert log.parent.name == run["run_id"] and "Started a local Ray instance" in log.read_text()


def test_import_and_load_config_load_neither_torch_ray_nor_mlflow():
    script = textwrap.dedent("""
        import sys
        import distributed_adcs as adcs
        cfg = adcs.load_config("configs/quickstart.yaml", ["train.epochs=3"])
        assert isinstance(cfg, adcs.JobConfig) and cfg.train.epochs == 3
        heavy = sorted(m for m in ("torch", "ray", "mlflow") if m in sys.modules)
        assert not heavy, heavy
        assert callable(adcs.train) and callable(adcs.evaluate) and callable(adcs.load_model)
        heavy = sorted(m for m in ("torch", "ray", "mlflow") if m in sys.modules)
        assert not heavy, heavy  # (the API loads them when called)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_load_model_takes_an_mlflow_model_uri(tmp_path, mlflow_uri):
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils

    import distributed_adcs as adcs
    from distributed_adcs.engine.checkpoint import state_digest
    from distributed_adcs.models import build_model

    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28, mean=[0.5], std=[0.25])
    client = MlflowClient(mlflow_uri)
    run_id = client.create_run(client.create_experiment("api", artifact_location=(tmp_path / "art").as_uri())).info.run_id
    with utils._use_tracking_uri(mlflow_uri):  # log_model writes to MLflow's global store
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(model, name="model", pip_requirements=["torch"],
                                            serialization_format="pickle")
    global_uri = utils._tracking_uri  # (None: never set)
    x = torch.rand(2, 1, 28, 28)
    for uri in (f"runs:/{run_id}/model", info.model_uri):  # a run's model by name, a logged model by id
        loaded = adcs.load_model(uri, tracking_uri=mlflow_uri)
        assert state_digest(loaded) == state_digest(model) and not loaded.training
        assert torch.equal(loaded(x), model.eval()(x))
        assert utils._tracking_uri == global_uri  # the caller's global store, as it was


def test_bad_calls_are_one_line_errors():
    import distributed_adcs as adcs

    with pytest.raises(adcs.UsageError, match="train needs a JobConfig"):
        adcs.train("configs/quickstart.yaml")
    with pytest.raises(adcs.UsageError, match="evaluate needs one of a run"):
        adcs.evaluate()


def test_the_example_in_a_jupyter_kernel_shows_notebook_bars():
    """The README's example in a real IPython kernel (scripts/notebook_check.py): tqdm.auto picks
    the notebook bars there, and the kernel displays them as ipywidgets beside the job's lines."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "notebook_check.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "notebook bars: True shown: True" in proc.stdout
    widgets = int(proc.stdout.rsplit("notebook bars (widgets) displayed: ", 1)[1].split()[0])
    assert widgets >= 1 and " FINISHED " in proc.stdout, proc.stdout[-3000:]
