"""The distributed pipeline on real Ray: actors, merges, DDP training, failures and resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from distributed_adcs.config import load_config
from distributed_adcs.engine.build import load_job_splits, make_model
from distributed_adcs.engine.selection import local_selector

from helpers import TINY

pytestmark = pytest.mark.ray


def _cfg(tmp_path, mlflow_uri, *extra):
    return load_config("configs/quickstart.yaml", [*TINY, f"mlflow.tracking_uri={mlflow_uri}",
                                                   f"train.output_dir={tmp_path / 'runs'}", *extra])


@pytest.fixture(scope="module")
def selection_setup(tmp_path_factory):
    cfg = load_config("configs/quickstart.yaml", [*TINY, "coreset.method=craig", "coreset.fraction=0.25", "coreset.warmup_epochs=1",
                                                  "selection.num_shards=4", "ray.cpus_per_actor=1"])
    splits = load_job_splits(cfg)
    torch.manual_seed(0)
    model = make_model(cfg, splits)
    return cfg, splits, model


def _selector(cfg, splits, num_actors, merge="exact"):
    from dataclasses import replace

    from distributed_adcs.distributed.actors import actor_pool_selector, start_actors

    cfg = replace(cfg, ray=replace(cfg.ray, num_actors=num_actors), selection=replace(cfg.selection, merge=merge))
    actors = start_actors(cfg, splits)
    return actor_pool_selector(cfg, actors, splits.train), actors


def _same(a, b):
    return torch.equal(a.positions, b.positions) and torch.allclose(a.weights, b.weights)


def test_same_coreset_from_1_2_and_4_actors_and_in_process(ray_session, selection_setup):
    cfg, splits, model = selection_setup
    results = []
    for n in (1, 2, 4):
        selector, actors = _selector(cfg, splits, n)
        results.append(selector(model, 3))
        actors.kill()
    here = local_selector(cfg, splits, torch.device("cpu"))(model, 3)
    assert _same(results[0], results[1]) and _same(results[0], results[2])
    assert _same(results[0], here)
    assert results[0].positions.numel() == round(0.25 * len(splits.train))
    assert set(results[0].extra["shard"].tolist()) <= {0, 1, 2, 3}


def test_actor_killed_during_selection_gives_same_coreset(ray_session, selection_setup, tmp_path, monkeypatch):
    from distributed_adcs.distributed.actors import FAULT_ENV

    cfg, splits, model = selection_setup
    clean = local_selector(cfg, splits, torch.device("cpu"))(model, 5)
    marker = tmp_path / "actor-died"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    selector, actors = _selector(cfg, splits, 2)
    faulty = selector(model, 5)
    assert marker.exists()  # an actor really died
    assert _same(clean, faulty)
    actors.kill()


def test_two_round_merge_with_one_shard_is_the_exact_greedy(ray_session, selection_setup):
    from dataclasses import replace

    cfg, splits, model = selection_setup
    one = replace(cfg, selection=replace(cfg.selection, num_shards=1))
    exact, a1 = _selector(one, splits, 1, "exact")
    two, a2 = _selector(one, splits, 1, "two_round")
    e, t = exact(model, 2), two(model, 2)
    order_e, order_t = e.positions.argsort(), t.positions.argsort()
    assert torch.equal(e.positions[order_e], t.positions[order_t])
    torch.testing.assert_close(e.weights[order_e], t.weights[order_t])
    a1.kill()
    a2.kill()


def test_ddp_two_workers_identical_weights_one_row_per_epoch(ray_session, tmp_path, mlflow_uri):
    from distributed_adcs.run import train

    import helpers
    from helpers import EpochLog

    ray_session.cloudpickle.register_pickle_by_value(helpers)  # the controller cannot import tests/
    hook = EpochLog(tmp_path / "epochs.jsonl")
    cfg = _cfg(tmp_path, mlflow_uri, "ray.num_workers=2", "ray.num_actors=1", "ray.cpus_per_worker=1",
               "coreset.method=craig", "coreset.warmup_epochs=1", "coreset.every=1", "train.epochs=3",
               "objective.name=trades", "mlflow.log_model=true")
    run_id = train(cfg, callbacks=[hook])
    client = MlflowClient(mlflow_uri)
    run = client.get_run(run_id)
    from test_methods import DDP_ELSEWHERE, check_job

    assert "test_ddp_two_workers" in DDP_ELSEWHERE[cfg.coreset.method]  # this job is the DDP test of CRAIG's shape
    check_job(run_id, mlflow_uri, cfg)
    for metric in ("train_loss", "val_robust_acc", "epoch_time_s"):
        assert [m.step for m in client.get_metric_history(run_id, metric)] == [0, 1, 2], metric
    # the job's epoch hook ran in the Train controller (another process), once per epoch, after the metrics
    losses = {m.step: m.value for m in client.get_metric_history(run_id, "train_loss")}
    calls = hook.calls()
    assert [(c["epoch"], c["train_loss"]) for c in calls] == [(e, losses[e]) for e in range(3)]
    assert {c["pid"] for c in calls} != {os.getpid()}
    assert len(client.get_metric_history(run_id, "selection_greedy_s")) == 2  # epochs 1 and 2
    digests = json.loads(Path(client.download_artifacts(run_id, "ddp/final_state_digests.json", str(tmp_path))).read_text())
    assert len(digests) == 2 and len(set(digests.values())) == 1
    coresets = [a.path for a in client.list_artifacts(run_id, "coresets")]
    assert coresets == ["coresets/coreset_epoch001.parquet", "coresets/coreset_epoch002.parquet"]
    table = pq.read_table(client.download_artifacts(run_id, coresets[0], str(tmp_path)))
    assert set(table.column_names) >= {"index", "weight", "label", "epoch", "shard"}
    assert table.num_rows == round(0.3 * 384)
    assert "test_clean_acc" in run.data.metrics and run.data.metrics["trainer_startup_s"] > 0
    # each test image's outcome, from rank 0 through the controller: it agrees with the metrics
    from distributed_adcs.accuracy import unpack_mask

    outcomes = json.loads(Path(client.download_artifacts(run_id, "eval/test_outcomes.json", str(tmp_path))).read_text())
    n = outcomes["examples"]["pgd3"]
    assert n == 128 and outcomes["models"]["last"].keys() >= {"clean", "pgd3"}
    assert float(unpack_mask(outcomes["models"]["last"]["pgd3"], n).float().mean()) == \
        pytest.approx(run.data.metrics["test_pgd3_acc"])
    # the Ray Train path logs the job's models too, once: the last checkpoint's, as MLflow Models
    from helpers import logged_and_saved_logits

    logits = logged_and_saved_logits(mlflow_uri, run_id, tmp_path / "models")
    assert set(logits) == {"last", "best"}
    assert all(torch.allclose(logged, saved, atol=1e-5) for logged, saved in logits.values())
    assert len(client.search_logged_models([run.info.experiment_id])) == 2  # logged once


def test_training_worker_killed_resumes_from_last_checkpoint(ray_session, tmp_path, mlflow_uri, monkeypatch):
    from distributed_adcs.distributed.worker_sink import FAULT_ENV
    from distributed_adcs.run import train

    marker = tmp_path / "worker-died"
    monkeypatch.setenv(FAULT_ENV, f"1:{marker}")
    cfg = _cfg(tmp_path, mlflow_uri, "ray.num_workers=2", "ray.cpus_per_worker=1", "train.epochs=3",
               "coreset.method=random", "coreset.warmup_epochs=1")
    run_id = train(cfg)
    assert marker.exists()  # the worker really died at epoch 1
    client = MlflowClient(mlflow_uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    # epoch 0 was checkpointed before the crash, so no epoch is lost or logged twice
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [0, 1, 2]
    from test_methods import DDP_ELSEWHERE, check_job

    assert "test_training_worker_killed" in DDP_ELSEWHERE[cfg.coreset.method]  # and the DDP test of random's shape
    check_job(run_id, mlflow_uri, cfg)
