"""A finished job's models as MLflow Models (``tracking/model_log.py``), rebuilt from a checkpoint
alone (``engine/saved_models.py``), and ``adcs evaluate --model``.

One tiny in-process job with weight averaging and a registered name serves every test here; the
Ray Train path logs its models in ``test_distributed.py``'s DDP job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow.artifacts
import pytest
import torch
from mlflow.tracking import MlflowClient

from distributed_adcs.config import ConfigError, load_config
from distributed_adcs.engine.checkpoint import load_checkpoint
from distributed_adcs.engine.saved_models import checkpoint_shape, saved_models
from distributed_adcs.tracking.epochs import find_checkpoint

from helpers import TINY, new_store

NAME = "tiny-adcs"  # the registered model


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from distributed_adcs.run import train

    where = tmp_path_factory.mktemp("model-logging")
    uri = new_store(where / "mlflow.db")
    cfg = load_config("configs/quickstart.yaml", [*TINY, f"mlflow.tracking_uri={uri}", f"train.output_dir={where / 'runs'}",
                                                  "mlflow.log_model=true", f"mlflow.registered_model={NAME}",
                                                  "train.ema_decay=0.9"])
    run_id = train(cfg)
    client = MlflowClient(uri)
    payload = load_checkpoint(find_checkpoint(client, run_id, where / "ckpt"))
    return uri, run_id, client, payload, where


def test_a_tiny_run_logs_its_models_with_their_robustness_cards(job, monkeypatch):
    uri, run_id, client, payload, where = job
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # MLflow finds a run's logged models through its global URI
    run = client.get_run(run_id)
    models = {m.name: m for m in client.search_logged_models([run.info.experiment_id])}
    assert set(models) == {"model", "best_model"}
    assert {o.model_id for o in run.outputs.model_outputs} == {m.model_id for m in models.values()}
    version = client.get_model_version(NAME, "1")  # the best epoch's model is the registered one
    assert version.source == f"models:/{models['best_model'].model_id}" and version.run_id == run_id
    m = run.data.metrics
    tags = version.tags
    assert tags["threat_model"] == "Linf" and float(tags["epsilon"]) == 0.1
    assert float(tags["clean_acc"]) == pytest.approx(m["best_test_clean_acc"], abs=1e-6)
    assert float(tags["pgd.acc"]) == pytest.approx(m["best_test_pgd3_acc"], abs=1e-6)
    assert (tags["pgd.steps"], tags["pgd.n_examples"], tags["autoattack.version"]) == ("3", "128", "none")
    assert (tags["training.objective"], tags["coreset.method"], tags["coreset.fraction"]) == ("pgd_linf", "full", "1")
    assert int(tags["cost.passes_forward"]) == int(m["passes_forward"]) > 0
    assert int(tags["epoch"]) == int(m["best_epoch"]) and m["time_model_log_s"] > 0
    # the card travels with the model as a JSON file; the last model's card has the last model's numbers
    card = json.loads(Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model/robustness_card.json",
                                                               dst_path=str(where))).read_text())
    assert card["clean_acc"] == m["test_clean_acc"] and card["pgd"]["acc"] == m["test_pgd3_acc"]
    assert card["model"] == "model" and card["cost"]["wall_time_s"] == m["wall_time_s"]
    assert models["model"].tags["clean_acc"] == f"{m['test_clean_acc']:.6g}"


# A fresh process: it loads the logged models with MLflow alone (no distributed_adcs imported),
# then rebuilds the checkpoint's models where importing the data code (and torchvision) fails.
FRESH = r"""
import sys
import torch
import mlflow.pytorch

inputs, checkpoint, out, *uris = sys.argv[1:]
x = torch.load(inputs)
logits = {uri: mlflow.pytorch.load_model(uri)(x).detach() for uri in uris}
assert not [m for m in sys.modules if m.startswith("distributed_adcs")], "loading a model imported distributed_adcs"

class NoData:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchvision" or name.startswith("distributed_adcs.data"):
            raise ImportError(f"no data code in this process: {name}")

sys.meta_path.insert(0, NoData())
from distributed_adcs.engine.checkpoint import load_checkpoint
from distributed_adcs.engine.saved_models import saved_models

for which, model in saved_models(load_checkpoint(checkpoint)).items():
    logits[which] = model(x).detach()
torch.save(logits, out)
"""


def test_a_fresh_process_without_the_data_loads_the_models_and_gets_the_checkpoints_logits(job, tmp_path):
    uri, run_id, client, payload, where = job
    shape = checkpoint_shape(payload)
    assert shape is not None and (shape.num_classes, shape.in_channels, shape.image_size) == (10, 1, 28)
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    ckpt = find_checkpoint(client, run_id, tmp_path)
    uris = [f"runs:/{run_id}/model", f"runs:/{run_id}/best_model", f"models:/{NAME}/1"]
    proc = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "x.pt"), str(ckpt), str(tmp_path / "out.pt"), *uris],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        ours = {which: model(x) for which, model in saved_models(payload).items()}
        raw = saved_models({**payload, "ema": None})["last"](x)  # the weights before averaging
    assert torch.allclose(got["last"], ours["last"]) and torch.allclose(got["best"], ours["best"])
    assert torch.allclose(got[uris[0]], ours["last"], atol=1e-5)
    assert torch.allclose(got[uris[1]], ours["best"], atol=1e-5)
    assert torch.allclose(got[uris[2]], ours["best"], atol=1e-5)
    assert not torch.allclose(raw, ours["last"], atol=1e-3)  # the logged model is the average, not these


def test_evaluate_a_registered_model_reproduces_its_training_time_numbers(job):
    from distributed_adcs.evaluation import evaluate

    uri, run_id, client, payload, where = job
    results = evaluate(model=f"models:/{NAME}/1", tracking_uri=uri)
    m = client.get_run(run_id).data.metrics
    assert results["test_clean_acc"] == m["best_test_clean_acc"]
    assert results["test_pgd3_acc"] == m["best_test_pgd3_acc"]
    assert "best_test_clean_acc" not in results  # one model: its weights as they were logged


@pytest.mark.parametrize("sets, message", [
    (["mlflow.registered_model=a/b"], "mlflow.registered_model: must be a name without"),
    (["mlflow.registered_model=x", "mlflow.log_model=false"], "mlflow.registered_model: needs mlflow.log_model"),
])
def test_bad_model_logging_config_fails_naming_the_key(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, sets)


def test_evaluate_a_model_that_does_not_exist_is_one_line(tmp_path):
    from distributed_adcs.config import UsageError
    from distributed_adcs.evaluation import evaluate

    uri = new_store(tmp_path / "mlflow.db")
    with pytest.raises(UsageError, match=r"^--model models:/nothing/1: no such MLflow model"):
        evaluate(model="models:/nothing/1", tracking_uri=uri)
