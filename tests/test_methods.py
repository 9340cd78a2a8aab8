"""Every registered coreset method through every path a job can take, on real data and Ray.

Parametrised over ``distributed_adcs.methods.METHODS``: a new method is covered by adding its
registry entry, and a layer that forgets to ask the spec fails here, not on a user's cluster.
Paths: the in-process job, the actor pool with the exact and the two-round merge, and a
2-worker DDP job for each shape of method (:func:`_one_per_shape`; the shapes that another
test's 2-worker job already runs, :data:`DDP_ELSEWHERE`, are checked there).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from mlflow.tracking import MlflowClient

from distributed_adcs.config import load_config
from distributed_adcs.engine.build import load_job_splits, make_model
from distributed_adcs.engine.phases import selection_epochs
from distributed_adcs.engine.selection import local_selector
from distributed_adcs.methods import METHODS
from distributed_adcs.run import JobPlan, train

from helpers import TINY

pytestmark = pytest.mark.ray
NAMES = list(METHODS)
FRACTION = 0.25


def _cfg(method: str, tmp_path=None, mlflow_uri=None, *extra: str):
    sets = [*TINY, f"coreset.method={method}", f"coreset.fraction={FRACTION}", "coreset.warmup_epochs=1",
            "coreset.every=1", "train.epochs=2", "selection.num_shards=4", *extra]
    if tmp_path is not None:
        sets += [f"mlflow.tracking_uri={mlflow_uri}", f"train.output_dir={tmp_path / 'runs'}"]
    return load_config("configs/quickstart.yaml", sets)


def check_job(run_id: str, mlflow_uri: str, cfg) -> None:
    """The run finished, trained on the subset the spec implies, and logged its coresets (also
    the check of test_distributed.py's 2-worker job, which carries its method's shape here)."""
    spec, n, epochs = METHODS[cfg.coreset.method], cfg.data.limit, cfg.train.epochs
    client = MlflowClient(mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    examples = {m.step: m.value for m in client.get_metric_history(run_id, "train_examples")}
    expected_at_1 = n if spec.trains_on_all else round(cfg.coreset.fraction * n)
    # rank 0 reports its share; DDP pads the shares to equal size (less than one example a rank)
    world = max(1, cfg.ray.num_workers)
    assert 0 <= examples[1] * world - expected_at_1 < world, examples
    coresets = [a.path for a in client.list_artifacts(run_id, "coresets")]
    assert coresets == [f"coresets/coreset_epoch{e:03d}.parquet" for e in selection_epochs(epochs, cfg.coreset)]
    assert bool(coresets) != spec.trains_on_all
    assert "test_clean_acc" in run.data.metrics
    _check_time_split(client, run_id, spec)
    if spec.needs_records:  # every rank's records were gathered: after the warm-up epoch all are known
        assert [m.value for m in client.get_metric_history(run_id, "records_coverage")] == [1.0] * epochs


def _check_time_split(client, run_id: str, spec) -> None:
    """The run's wall time is split into its parts, each booked where it was spent (warm-up
    epoch 0, then one selection-and-train epoch; validation after each, the test at the end)."""
    last = client.get_run(run_id).data.metrics
    split = {k: last[f"time_{k}_s"] for k in ("startup", "warmup", "selection", "training", "validation", "test")}
    assert split["startup"] > 0 and split["training"] > 0 and split["validation"] > 0 and split["test"] > 0, split
    assert (split["warmup"] > 0) != spec.trains_on_all, split  # full has no warm-up: every epoch is training
    assert (split["selection"] > 0) != spec.trains_on_all, split
    # the epochs' parts add up to the epochs' wall time (validation and test are outside it)
    epochs = split["warmup"] + split["selection"] + split["training"]
    assert epochs == pytest.approx(last["wall_time_s"], rel=0.05, abs=0.05), (split, last["wall_time_s"])
    after_first = {m.step: m.value for m in client.get_metric_history(run_id, "time_warmup_s")}
    assert after_first[0] == after_first[1] == split["warmup"]  # epoch 1 is no warm-up: nothing added


@pytest.mark.parametrize("method", NAMES)
def test_in_process_job(method, tmp_path, mlflow_uri):
    cfg = _cfg(method, tmp_path, mlflow_uri)
    assert JobPlan.of(cfg).where == "process"
    check_job(train(cfg), mlflow_uri, cfg)


@pytest.mark.parametrize("method", [m for m, spec in METHODS.items() if spec.needs_embeddings])
def test_in_process_job_with_embedding_actors(method, ray_session, tmp_path, mlflow_uri):
    cfg = _cfg(method, tmp_path, mlflow_uri, "ray.num_actors=2", "ray.cpus_per_actor=1")
    assert (JobPlan.of(cfg).where, JobPlan.of(cfg).selection) == ("process", "actors")
    check_job(train(cfg), mlflow_uri, cfg)
    assert ray_session.is_initialized()  # the Ray it joined is left running: it did not start it


@pytest.fixture(scope="module")
def model_and_splits():
    cfg = _cfg("craig")
    splits = load_job_splits(cfg)
    torch.manual_seed(0)
    return make_model(cfg, splits), splits


@pytest.mark.parametrize("method", NAMES)
def test_actor_path_with_exact_and_two_round_merge(method, ray_session, model_and_splits):
    from distributed_adcs.distributed.actors import actor_pool_selector, start_actors

    model, splits = model_and_splits
    spec = METHODS[method]
    cfg = _cfg(method, None, None, "ray.num_actors=2", "ray.cpus_per_actor=1")
    plan = JobPlan.of(cfg)
    if spec.trains_on_all:
        assert plan.selection == "none"
        return
    if spec.needs_records:  # drawn by the Job from what training recorded: no actors, no attack
        assert plan.selection == "records"
        return
    merged = {m: replace(cfg, selection=replace(cfg.selection, merge=m)) for m in ("exact", "two_round")}
    here = local_selector(cfg, splits, torch.device("cpu"))(model, 1)
    if not spec.needs_embeddings:
        assert plan.selection == "process"  # no actors are started for a method without embeddings
        for merge in ("exact", "two_round"):  # and the merge setting is moot
            got = actor_pool_selector(merged[merge], [], splits.train)(model, 1)
            assert torch.equal(got.positions, here.positions) and torch.equal(got.weights, here.weights)
        return
    assert plan.selection == "actors"
    actors = start_actors(cfg, splits)
    try:
        exact = actor_pool_selector(merged["exact"], actors, splits.train)(model, 1)
        two = actor_pool_selector(merged["two_round"], actors, splits.train)(model, 1)
    finally:
        actors.kill()
    assert torch.equal(exact.positions, here.positions) and torch.allclose(exact.weights, here.weights)
    here_two = local_selector(merged["two_round"], splits, torch.device("cpu"))(model, 1)  # the same merge in-process
    assert torch.equal(two.positions, here_two.positions) and torch.allclose(two.weights, here_two.weights)
    budget = round(FRACTION * len(splits.train))
    labels = splits.train.labels
    for got in (exact, two):
        assert got.positions.numel() == budget == len(set(got.positions.tolist()))
        assert torch.equal(torch.bincount(labels[got.positions], minlength=10),
                           torch.bincount(labels[here.positions], minlength=10))
        assert bool((got.weights > 0).all()) and set(got.extra["shard"].tolist()) <= {0, 1, 2, 3}


def _one_per_shape() -> list[str]:
    """The first method of each shape a DDP job can take: what the job asks of a method's spec
    (all data or a subset; embeddings, merged in one round or two; recorded losses). Methods of
    one shape differ only in their selector, which the actor-path test above runs for each of
    them, so a 2-worker job (a Ray Train job costs about 60 CPU-seconds here) runs once a shape;
    a method with a new shape gets its own. The shapes of :data:`DDP_ELSEWHERE` are left to the
    2-worker jobs named there, which run :func:`check_job` on their method too."""
    shapes: dict[tuple, str] = {}
    for name, spec in METHODS.items():
        shapes.setdefault(_shape(spec), name)
    elsewhere = {_shape(METHODS[name]) for name in DDP_ELSEWHERE}
    return [name for shape, name in shapes.items() if shape not in elsewhere]


def _shape(spec) -> tuple:
    return spec.trains_on_all, spec.needs_embeddings, spec.second_round is None, spec.needs_records


# method -> the 2-worker Ray Train job that runs check_job on it (each costs about 40 CPU-seconds)
DDP_ELSEWHERE = {"craig": "test_distributed.py::test_ddp_two_workers_identical_weights_one_row_per_epoch",
                 "random": "test_distributed.py::test_training_worker_killed_resumes_from_last_checkpoint",
                 "full": "test_provenance.py::test_a_ray_train_job_records_each_nodes_system_metrics_and_provenance"}


@pytest.mark.parametrize("method", _one_per_shape())
def test_ddp_job(method, ray_session, tmp_path, mlflow_uri):
    cfg = _cfg(method, tmp_path, mlflow_uri, "ray.num_workers=2", "ray.cpus_per_worker=1", "ray.num_actors=1")
    assert JobPlan.of(cfg).where == "ray_train"
    check_job(train(cfg), mlflow_uri, cfg)
