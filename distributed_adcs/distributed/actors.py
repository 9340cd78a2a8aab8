"""Embedding actors: each computes the selection attack and embeddings for whole shards.

The driver (rank 0 of the trainer) puts the current weights in the object store once per
selection and sends every actor the same reference; an actor loads them once per selection.
Shards are assigned round-robin; a shard's randomness is seeded by the shard, not the actor,
so 1, 2 or 4 actors produce the same embeddings. An actor that dies is restarted by Ray
(``max_restarts``) and its task retried (``max_task_retries``); the retried shard gives the
same result, so the coreset is the same as without the failure.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, cast

import ray
import torch

from ..config import JobConfig, config_from_dict, to_dict
from ..data import ImageSet, Splits
from ..engine.build import make_model, make_objective
from ..engine.merge import shard_result
from ..engine.runtime import resolve_device
from ..engine.selection import ShardSelector
from ..engine.shards import ShardEmbeddings
from ..progress import progress

FAULT_ENV = "ADCS_FAULT_ACTOR_EXIT_ONCE"  # tests: path of a marker; the first actor call to see no marker dies


def _maybe_inject_fault() -> None:
    marker = os.environ.get(FAULT_ENV)
    if marker and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)  # a real crash of the actor process, as a lost node would cause


class EmbeddingWorker:
    """The actor's body (a plain class, so tests can also run it in-process)."""

    def __init__(self, cfg: dict, meta: dict[str, Any], device: str | None = None):
        self.cfg: JobConfig = config_from_dict(cfg)
        self.train: ImageSet | None = None  # from the first call (see embed)
        self.device = torch.device(device) if device else resolve_device("cuda" if self.cfg.ray.use_gpu else "cpu")
        threads = max(1, int(self.cfg.ray.cpus_per_actor))
        torch.set_num_threads(threads)
        # make_model reads only the model_meta fields of a Splits: the actor holds no Splits
        self.model = make_model(self.cfg, cast(Splits, SimpleNamespace(**meta))).to(self.device)
        self.objective = make_objective(self.cfg.objective, steps=self.cfg.coreset.selection_steps)
        self.version: Any = None

    def embed(self, data: list, weights: dict[str, torch.Tensor], version: Any, epoch: int, shard: int,
              bounds: tuple[int, int], mode: str) -> ShardEmbeddings:
        """``data``: ``[reference to the training set]`` (or ``[the set]``), fetched on the first call."""
        _maybe_inject_fault()
        if self.train is None:
            self.train = ray.get(data[0]) if isinstance(data[0], ray.ObjectRef) else data[0]
        if version != self.version:
            self.model.load_state_dict(weights)
            self.version = version
        return shard_result(self.cfg, self.model, self.train, shard, bounds, epoch, self.device, self.objective, mode)


EmbeddingActor = ray.remote(EmbeddingWorker)


def model_meta(splits: Splits) -> dict[str, Any]:
    return {"image_shape": splits.image_shape, "num_classes": splits.num_classes,
            "mean": splits.mean, "std": splits.std}


class ActorPool(list):
    """The embedding actors of a job (a list of handles) plus the object-store reference of
    the training set, kept alive for as long as the pool; every call hands it to the actor."""

    data_ref: Any = None

    def kill(self) -> None:
        for actor in self:
            ray.kill(actor)
        self.clear()


def start_actors(cfg: JobConfig, splits: Splits) -> ActorPool:
    """Start ``ray.num_actors`` embedding actors holding the training set (sent once)."""
    pool = ActorPool()
    pool.data_ref = ray.put(splits.train)
    options: dict[str, Any] = {"num_cpus": cfg.ray.cpus_per_actor, "max_restarts": cfg.ray.max_failures,
               "max_task_retries": cfg.ray.max_failures}
    if cfg.ray.use_gpu:
        options["num_gpus"] = cfg.ray.gpus_per_actor
    if os.environ.get(FAULT_ENV):  # tests: reach actors started by an already running Ray
        options["runtime_env"] = {"env_vars": {FAULT_ENV: os.environ[FAULT_ENV]}}
    # The training set reaches an actor with its first call (a reference, nested so that Ray
    # does not resolve it on every call), not as a constructor argument: Ray replays the
    # constructor on a restart, and an argument in the object store may be gone by then (Ray
    # warns of it). Every call carries the reference, so a restarted actor fetches it again.
    pool.extend(EmbeddingActor.options(**options).remote(to_dict(cfg), model_meta(splits))
                for _ in range(cfg.ray.num_actors))
    return pool


class ActorShards:
    """The shard strategy of :class:`~distributed_adcs.engine.selection.ShardSelector` on
    embedding actors: round-robin, the current weights put in the object store once."""

    merges = True

    def __init__(self, actors: list, train: ImageSet):
        self.actors, self.train = actors, train
        self.data_ref = getattr(actors, "data_ref", None)  # an ActorPool's; else put on first use

    def compute(self, model: torch.nn.Module, epoch: int, bounds: list[tuple[int, int]],
                mode: str) -> list[ShardEmbeddings]:
        weights = ray.put({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if self.data_ref is None:
            self.data_ref = ray.put(self.train)
        refs = [self.actors[i % len(self.actors)].embed.remote([self.data_ref], weights, epoch, epoch, i, b, mode)
                for i, b in enumerate(bounds)]
        return [ray.get(r) for r in progress(refs, desc=f"selection epoch {epoch}", total=len(refs))]


def actor_pool_selector(cfg: JobConfig, actors: list, train: ImageSet) -> ShardSelector:
    """``selector(model, epoch) -> Selection`` that farms shards out to embedding actors."""
    return ShardSelector(cfg, train, ActorShards(actors, train))


@contextmanager
def actor_selector(cfg: JobConfig, splits: Splits) -> Iterator[ShardSelector]:
    """A selector on ``ray.num_actors`` embedding actors for a job trained in this process;
    the actors (and a Ray started here) are released on exit."""
    from .cluster import connect
    from .resources import check_cluster

    started = connect(cfg)
    try:
        check_cluster(cfg)
        actors = start_actors(cfg, splits)
        try:
            yield actor_pool_selector(cfg, actors, splits.train)
        finally:
            actors.kill()
    finally:
        if started:
            ray.shutdown()
