"""What a job asks Ray for, and a check that the cluster can ever give it.

A job holds one set of resources for its whole life, the same in every phase:

- a Ray Train job (``ray.num_workers >= 1``): ``num_workers`` bundles of
  ``{CPU: cpus_per_worker, GPU: 1 if use_gpu}``. Selection runs on those workers
  (``rank_shards.py``), so it needs nothing more;
- an in-process job with embedding actors: ``num_actors`` bundles of
  ``{CPU: cpus_per_actor, GPU: gpus_per_actor if use_gpu}`` (the driver holds none).

Ray itself never turns a request that cannot fit into an error: Train V2 waits 60 s for its
workers and retries without limit, and an actor stays pending. So before anything starts,
:func:`check_fits` packs the bundles onto the cluster's nodes (first fit, largest first, by
each node's total resources) and raises :class:`InsufficientResources` with one line naming
what the job needs and what the cluster has.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

from ..config import JobConfig, UsageError
from ..methods import get_method

Bundle = dict[str, float]
_EPS = 1e-9


class InsufficientResources(UsageError):
    """The cluster can never hold what the job asks for (one line, for the CLI)."""


def job_bundles(cfg: JobConfig) -> list[Bundle]:
    """The resource bundles the job holds while it runs (see the module docstring)."""
    r = cfg.ray
    if r.num_workers > 0:
        bundle = {"CPU": r.cpus_per_worker, **({"GPU": 1.0} if r.use_gpu else {})}
        return [dict(bundle) for _ in range(r.num_workers)]
    if r.num_actors > 0 and get_method(cfg.coreset.method).needs_embeddings:
        bundle = {"CPU": r.cpus_per_actor, **({"GPU": r.gpus_per_actor} if r.use_gpu else {})}
        return [dict(bundle) for _ in range(r.num_actors)]
    return []


def total(bundles: Iterable[Mapping[str, float]]) -> Bundle:
    out: Bundle = {}
    for b in bundles:
        for k, v in b.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _fmt(resources: Mapping[str, float]) -> str:
    shown = {k: v for k, v in sorted(resources.items()) if k in ("CPU", "GPU") or not k.startswith(("node:", "memory",
                                                                                                     "object_store"))}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in shown.items()) + "}"


def _place(bundle: Bundle, node: dict) -> bool:
    """Take ``bundle`` out of ``node`` if it fits (Ray's rule for GPUs: a whole-GPU request
    takes whole free GPUs, a fraction must fit within one GPU)."""
    need_gpu = bundle.get("GPU", 0.0)
    if any(node["other"].get(k, 0.0) + _EPS < v for k, v in bundle.items() if k != "GPU"):
        return False
    gpus = node["gpus"]
    if need_gpu >= 1:
        free = [i for i, left in enumerate(gpus) if left >= 1 - _EPS]
        if len(free) < math.ceil(need_gpu - _EPS):
            return False
        for i in free[: math.ceil(need_gpu - _EPS)]:
            gpus[i] = 0.0
    elif need_gpu > 0:
        slot = next((i for i, left in enumerate(gpus) if left + _EPS >= need_gpu), None)
        if slot is None:
            return False
        gpus[slot] -= need_gpu
    for k, v in bundle.items():
        if k != "GPU":
            node["other"][k] = node["other"].get(k, 0.0) - v
    return True


def pack(bundles: list[Bundle], nodes: list[Mapping[str, float]]) -> bool:
    """Whether every bundle fits on the nodes at once (first fit, largest bundle first)."""
    state = [{"other": {k: v for k, v in n.items() if k != "GPU"}, "gpus": [1.0] * int(n.get("GPU", 0) + _EPS)}
             for n in nodes]
    for b in sorted(bundles, key=lambda x: (x.get("GPU", 0.0), x.get("CPU", 0.0)), reverse=True):
        if not any(_place(b, node) for node in state):
            return False
    return True


def check_fits(cfg: JobConfig, nodes: list[Mapping[str, float]]) -> None:
    """Raise :class:`InsufficientResources` unless the job's bundles fit on ``nodes``.

    Args:
        nodes: each alive node's total resources (``ray.nodes()[i]["Resources"]``).
    """
    bundles = job_bundles(cfg)
    if not bundles or pack(bundles, nodes):
        return
    what = "Ray Train workers" if cfg.ray.num_workers > 0 else "embedding actors"
    per = _fmt(bundles[0])
    biggest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    raise InsufficientResources(
        f"the job needs {len(bundles)} {what} of {per} each ({_fmt(total(bundles))} in all), but the cluster has "
        f"{_fmt(total(nodes))} on {len(nodes)} node(s), the largest {_fmt(biggest)}; lower ray.num_workers, "
        f"ray.num_actors or the per-worker resources, or add nodes")


def check_cluster(cfg: JobConfig) -> None:
    """:func:`check_fits` against the connected Ray cluster's alive nodes.

    A cluster with an autoscaler may grow, so its configured maximum is what counts there:
    Ray Train checks that one itself, and this check is skipped.
    """
    import ray

    if _autoscaler_max():
        return
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    check_fits(cfg, nodes)


def _autoscaler_max() -> dict:
    try:  # what Ray Train V2 reads for the autoscaler's configured maximum (an internal API)
        from ray._private.state import state as ray_state

        return dict(ray_state.get_max_resources_from_cluster_config() or {})
    except Exception:
        return {}
