"""Ray Train: one long-lived ``TorchTrainer`` runs the whole job, selection included.

Why one trainer for the whole job: starting a Ray Train worker group costs about 15 s on
2 cores, more than a coreset epoch of small models. So instead of a ``fit()`` per training
phase, the trainer stays up.

Selection runs on the training workers themselves (``rank_shards.py``): rank ``r``
attacks and embeds shards ``r, r + W, ...``, rank 0 gathers the results, merges them into the
coreset and shares it with the other ranks. The workers hold the job's CPUs and GPUs anyway and would otherwise
sit idle while a selection runs, so the job needs the training phase's resources and nothing
more: no second set of actors that would have to fit beside the workers (on a cluster sized
for one phase, that deadlocked). Shard randomness depends on the shard, never on the rank, so
1 and 2 workers select the same coreset.

The epochs are ``engine.loop.run_epochs``, as in-process, with a sink that reports to Ray
Train (``worker_sink.py``): every epoch rank 0 reports metrics and a checkpoint (model,
optimiser, schedule, epoch, coreset, RNG states, the epoch's metrics); other ranks report
nothing. A failed worker group restarts from the fit's last checkpoint (``ray.max_failures``).
The controller-side ``MlflowReporter`` records each epoch in the job's MLflow run, so exactly
one process writes metrics (no duplicate rows).
"""

from __future__ import annotations

import datetime
import io
import socket
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from ..config import JobConfig, config_from_dict
from ..engine.build import load_job_splits
from ..engine.checkpoint import load_checkpoint, load_checkpoint_bytes, state_digest
from ..engine.job import Job
from ..engine.loop import run_epochs
from ..engine.runtime import generator, seed_everything
from ..methods import get_method
from ..tracking.system import system_metrics
from .rank_shards import rank_shard_selector
from .worker_sink import CHECKPOINT_FILE, ReportSink


class DDPBackend:
    """Each rank trains its share of the (sub)set; rank 0's selection is shared with every rank."""

    def __init__(self, rank: int, world_size: int, seed: int, wait_s: float = 86_400.0, poll_s: float = 30.0):
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.wait_s, self.poll_s = wait_s, poll_s  # how long a rank waits for rank 0's selection
        self._sent = 0

    def shard(self, positions: torch.Tensor, weights: torch.Tensor, epoch: int):
        """The same seeded permutation on every rank, padded (by repeating it) to equal shares
        of at least two examples (BatchNorm needs two), strided by rank."""
        n = positions.numel()
        perm = torch.randperm(n, generator=generator(self.seed, "ddp-order", epoch))
        share = max(-(-n // self.world_size), 2)
        perm = perm.repeat(-(-share * self.world_size // n))[:share * self.world_size]
        mine = perm[self.rank::self.world_size]
        return positions[mine], weights[mine]

    def share_from_rank0(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank, through the process group's key-value store: a store
        poll, not a collective broadcast. The other ranks wait here while rank 0 merges a selection, which at scale
        outlasts the collective timeout (30 min by default; NCCL's watchdog would then abort the
        job): they poll the store every ``poll_s`` for up to ``wait_s`` (``ray.selection_wait_s``)."""
        if self.world_size == 1:
            return obj
        store = dist.distributed_c10d._get_default_store()
        self._sent += 1
        key = f"adcs/from-rank0/{self._sent}"
        if self.rank == 0:
            buffer = io.BytesIO()
            torch.save(obj, buffer)  # tensors keep their device type; every rank loads to the CPU
            store.set(key, buffer.getvalue())  # type: ignore[arg-type]  # Store.set takes bytes; torch's stub says str
            if self._sent > 2:  # every rank has read it: training collectives ran since
                store.delete_key(f"adcs/from-rank0/{self._sent - 2}")
            return obj
        waited = 0.0
        while True:
            try:
                store.wait([key], datetime.timedelta(seconds=self.poll_s))
                break
            except RuntimeError:  # DistStoreError: not there yet
                waited += self.poll_s
                if waited >= self.wait_s:
                    raise TimeoutError(f"rank {self.rank} waited {waited:.0f} s for rank 0's selection "
                                       f"(ray.selection_wait_s={self.wait_s:g})") from None
        return torch.load(io.BytesIO(store.get(key)), map_location="cpu", weights_only=False)

    def gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        box: list[Any] = [None] * self.world_size
        dist.all_gather_object(box, obj)
        return box

    def end_epoch(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics).

        DDP broadcasts buffers at the start of each forward, so after the last step of an
        epoch each rank holds its own running statistics; parameters already agree.
        """
        if self.world_size == 1:
            return
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's per-worker function: the whole job, from the last checkpoint if any; the first
    rank of each node records the node's system metrics meanwhile (``tracking/system.py``)."""
    started = time.time()
    ctx = ray.train.get_context()
    node = ray.get_runtime_context().get_node_id()
    spec = config.get("system_metrics") if _first_on_node(node, ctx.get_world_size()) else None
    # the series' node id: the first 8 hex digits of Ray's node id (the full one, and the host, in its tag)
    with system_metrics(spec, node_id=node[:8], node=f"{socket.gethostname()} {ray.util.get_node_ip_address()}, "
                        f"Ray node {node}"):
        _train(config, ctx, started)


def _first_on_node(node: str, world_size: int) -> bool:
    """Whether this rank is the first of its Ray node to ask: an atomic counter per node in the
    process group's store (no collective, so no device). Ray Train's local rank counts ranks
    per IP address, which several nodes of one machine share."""
    if world_size == 1:
        return True
    return dist.distributed_c10d._get_default_store().add(f"adcs/system-metrics/{node}", 1) == 1


def _train(config: dict, ctx, started: float) -> None:
    cfg: JobConfig = config_from_dict(config["cfg"])
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    seed_everything(cfg.seed, cfg.deterministic)
    device = ray.train.torch.get_device()
    splits = load_job_splits(cfg, evaluates=rank == 0)  # rank 0 alone validates and tests
    startup = {"trainer_startup_s": started - config["fit_called_at"], "worker_setup_s": time.time() - started}
    method = get_method(cfg.coreset.method)  # records-based methods select inside the Job itself
    selector = (None if method.trains_on_all or method.needs_records
                else rank_shard_selector(cfg, splits, device, rank, world))
    job = Job(cfg, splits, device, backend=DDPBackend(rank, world, cfg.seed, cfg.ray.selection_wait_s), selector=selector,
              wrap_model=ray.train.torch.prepare_model)
    # a first start counts from the job's submission; a restart of the worker group from its own start
    job.started_at = config.get("job_started_at") or started
    checkpoint = ray.train.get_checkpoint()  # (this fit's: its worker group restarted; driver.py)
    if checkpoint is not None:
        job.started_at = started
        with checkpoint.as_directory() as d:
            job.restore(load_checkpoint(Path(d) / CHECKPOINT_FILE))
    elif config.get("resume") is not None:
        job.restore(load_checkpoint_bytes(ray.get(config["resume"])))
    run_epochs(job, ReportSink(rank, world, splits.train, config.get("fault")), first_metrics=startup)
    final = job.final_evaluation() if rank == 0 else {}
    ray.train.report({**final, "epoch": cfg.train.epochs, "kind": "final", "state_digest": state_digest(job.model),
                      "test_outcomes": job.test_outcomes if rank == 0 else None}, checkpoint=None)
