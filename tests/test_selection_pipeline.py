"""The selection pipeline without Ray: an in-process job merges as ``selection:`` says.

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
from distributed_adcs.engine.build import load_job_splits, make_objective
from distributed_adcs.engine.checkpoint import save_checkpoint
from distributed_adcs.engine.job import Job
from distributed_adcs.engine.merge import merge_and_choose, merge_mode, shard_result, two_round_merge
from distributed_adcs.engine.shards import embed_shard, shard_bounds
from distributed_adcs.run import JobPlan, train

from helpers import TINY

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
