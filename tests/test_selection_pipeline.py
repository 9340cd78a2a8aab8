"""The selection pipeline without Ray: an in-process job merges as ``selection:`` says, and
the DDP ranks' shard strategy selects what one process selects.

Before the merge moved into the engine, a job with ``ray.num_workers: 0`` and
``ray.num_actors: 0`` always ran the exact merge, whatever ``merge`` and ``merge_memory_gb``
said; these tests fail on that code.
"""

from __future__ import annotations


import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from distributed_adcs.config import load_config
from distributed_adcs.engine.build import load_job_splits, make_model, make_objective
from distributed_adcs.engine.checkpoint import save_checkpoint
from distributed_adcs.engine.job import Job
from distributed_adcs.engine.merge import merge_and_choose, merge_mode, shard_result, two_round_merge
from distributed_adcs.engine.selection import local_selector
from distributed_adcs.engine.shards import embed_shard, shard_bounds
from distributed_adcs.run import JobPlan, train

from helpers import TINY, two_gloo_ranks

CPU = torch.device("cpu")


def _reference(cfg, splits, model, epoch: int):
    """The exact and the two-round coreset of ``model``, from the merge functions themselves."""
    train_set, objective = splits.train, make_objective(cfg.objective, steps=cfg.coreset.selection_steps)
    bounds = list(enumerate(shard_bounds(len(train_set), cfg.selection.num_shards)))
    exact = merge_and_choose(cfg, [embed_shard(model, cfg, train_set, i, b, epoch, CPU, objective)
                                   for i, b in bounds], epoch)
    two = two_round_merge(cfg, [shard_result(cfg, model, train_set, i, b, epoch, CPU, objective, "two_round")
                                for i, b in bounds], epoch, train_set.labels)
    return [{int(i): float(w) for i, w in zip(train_set.indices[s.positions].tolist(), s.weights.tolist())}
            for s in (exact, two)]


@pytest.mark.parametrize("setting", ["selection.merge=two_round", "selection.merge_memory_gb=1e-6"])
def test_in_process_job_honours_two_round_merge_and_memory_budget(setting, tmp_path, mlflow_uri):
    cfg = load_config("configs/quickstart.yaml", [
        *TINY, "coreset.method=craig", "coreset.fraction=0.25", "coreset.warmup_epochs=1", "coreset.every=1",
        "selection.num_shards=4", setting, f"mlflow.tracking_uri={mlflow_uri}",
        f"train.output_dir={tmp_path / 'runs'}"])
    assert (JobPlan.of(cfg).where, JobPlan.of(cfg).selection) == ("process", "process")
    splits = load_job_splits(cfg)
    torch.manual_seed(0)
    job = Job(cfg, splits, CPU)
    assert merge_mode(cfg, splits.train.labels, job.model) == "two_round"
    job.state.epoch = 1  # as if the warm-up epoch had run: the job resumes into its first selection
    start = tmp_path / "start.pt"
    save_checkpoint(start, job.payload())
    exact, two = _reference(cfg, splits, job.model, epoch=1)
    assert exact != two  # the two merges differ here, so the job's coreset says which one ran

    run_id = train(cfg, resume=str(start))
    client = MlflowClient(mlflow_uri)
    table = pq.read_table(client.download_artifacts(run_id, "coresets/coreset_epoch001.parquet", str(tmp_path)))
    got = dict(zip(table.column("index").to_pylist(), table.column("weight").to_pylist()))
    assert got.keys() == two.keys()
    assert got == pytest.approx(two)


def _setup(merge: str):
    cfg = load_config("configs/quickstart.yaml", [*TINY, "coreset.method=craig", "coreset.fraction=0.25",
                                                  "coreset.warmup_epochs=1", "selection.num_shards=4",
                                                  f"selection.merge={merge}"])
    splits = load_job_splits(cfg)
    torch.manual_seed(0)
    return cfg, splits, make_model(cfg, splits)


def _rank_selections(rank: int) -> dict:
    from distributed_adcs.distributed.rank_shards import rank_shard_selector

    out = {}
    for merge in ("exact", "two_round"):
        cfg, splits, model = _setup(merge)
        got = rank_shard_selector(cfg, splits, CPU, rank, 2)(model, 1)
        out[(rank, merge)] = None if got is None else (got.positions, got.weights)
    return out


def test_two_ddp_ranks_select_what_one_process_selects():
    """The DDP strategy (shards strided over 2 gloo ranks, gathered on rank 0) against the
    in-process one, with both merges: rank 0 returns the same coreset, rank 1 none."""
    out = {key: got for part in two_gloo_ranks(_rank_selections).values() for key, got in part.items()}
    for merge in ("exact", "two_round"):
        cfg, splits, model = _setup(merge)
        here = local_selector(cfg, splits, CPU)(model, 1)
        positions, weights = out[(0, merge)]
        assert torch.equal(positions, here.positions) and torch.equal(weights, here.weights), merge
        assert out[(1, merge)] is None
