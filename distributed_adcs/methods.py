"""The coreset-method registry: every fact about a method, stated once.

Each entry of ``METHODS`` says what a method needs and how the pipeline runs it; every layer
(config validation, the epoch plan, the selection phase, the Ray actors and merges, run
naming) asks the entry instead of testing the method's name. Adding a method is one module
with its selector plus one entry here.

The registry imports nothing heavy (no torch): config validation reads it before torch, Ray
or MLflow load. Functions are named ``"module:attribute"`` and imported on first use.

Fields of :class:`MethodSpec`:

- ``selector``: the per-group selector, ``fn(embeddings [n, d], budget, *, generator, mass)
  -> (local indices, weights in example units)`` (``coreset/types.py``).
- ``needs_embeddings``: selection runs the selection attack (it exists only to produce
  embeddings of adversarial examples) and computes per-example gradient embeddings, over the
  shards: in the training process, on embedding actors (``ray.num_actors``) or on the Ray
  Train ranks. A method without them selects from labels alone where the shards merge: no
  attack, and no actors are started.
- ``second_round``: how shard results merge when the embeddings do not fit where they merge
  (``selection.merge: two_round``, GreeDi): ``fn(candidate embeddings, candidate weights, k, seed)
  -> (indices, weights)``. ``None``: only the exact merge (all embeddings gathered) applies.
- ``trains_on_all``: the method never selects; every epoch trains on the whole set.
- ``needs_records``: the method selects from what training records anyway (every visited
  example's adversarial loss, and the validation split's robust error per class); its
  selector is then ``fn(scores [n], labels [n], budget, *, class_error, uniform, floor, seed)
  -> Coreset``. It runs in the training process (rank 0), with no attack and no actors.
- ``params``: the dataclass of the method's own parameters (``coreset.params``), validated by
  the config; ``adaptive`` reads its shares from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import check_unit
from .specs import NoParams, resolve


@dataclass(frozen=True, kw_only=True, slots=True)
class AdaptiveParams:
    uniform_share: float = 0.5  # the uniform part of the loss-proportional sampling mixture
    class_floor: float = 0.1  # the smallest class robust error a class quota uses

    def __post_init__(self) -> None:
        check_unit(self.uniform_share, "uniform_share")
        check_unit(self.class_floor, "class_floor")


@dataclass(frozen=True, kw_only=True, slots=True)
class MethodSpec:
    name: str
    summary: str  # one line for run descriptions and docs
    selector: str  # "module:attribute" of the per-group selector
    needs_embeddings: bool = False
    second_round: str | None = None  # "module:attribute", or None: exact merge only
    trains_on_all: bool = False
    needs_records: bool = False
    # "module:attribute" of peak_bytes(n, k, d): the selector's own allocation for one group of
    # n embeddings of d floats and a budget k (the merge budgets memory with it); None: O(n d)
    peak_bytes: str | None = None
    params: type = NoParams

    @property
    def has_two_round_merge(self) -> bool:
        """Whether ``selection.merge: two_round`` can apply (a method without embeddings selects
        from labels: there is nothing large to gather, so the merge setting is moot)."""
        return self.second_round is not None

    def select_fn(self) -> Callable[..., Any]:
        return resolve(self.selector)

    def selection_bytes(self, n: int, k: int, d: int) -> int:
        """Bytes one greedy over ``n`` embeddings of ``d`` floats allocates (embeddings included)."""
        own = resolve(self.peak_bytes)(n, k, d) if self.peak_bytes else 0
        return 4 * n * d + own

    def second_round_fn(self) -> Callable[..., Any]:
        if self.second_round is None:
            raise ValueError(f"coreset method {self.name!r} has no two-round merge; use selection.merge: exact")
        return resolve(self.second_round)


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec(name="full", summary="full-data adversarial training (the baseline)",
               selector="distributed_adcs.coreset.simple:full", trains_on_all=True),
    MethodSpec(name="random", summary="a uniform random subset, redrawn at every selection",
               selector="distributed_adcs.coreset.simple:random_subset"),
    MethodSpec(name="craig", summary="CRAIG: facility location over adversarial gradient embeddings",
               selector="distributed_adcs.coreset.facility:craig", needs_embeddings=True,
               second_round="distributed_adcs.coreset.greedi:craig_second_round",
               peak_bytes="distributed_adcs.coreset.facility:craig_peak_bytes"),
    MethodSpec(name="gradmatch", summary="GradMatch: non-negative OMP on adversarial gradient embeddings",
               selector="distributed_adcs.coreset.gradmatch:gradmatch", needs_embeddings=True,
               second_round="distributed_adcs.coreset.greedi:gradmatch_second_round",
               peak_bytes="distributed_adcs.coreset.gradmatch:gradmatch_peak_bytes"),
    MethodSpec(name="adaptive", summary="sampled from the recorded adversarial losses, class quotas by robust error",
               selector="distributed_adcs.coreset.adaptive:adaptive", needs_records=True,
               params=AdaptiveParams),
)}


def get_method(name: object) -> MethodSpec:
    """The spec of ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    try:
        return METHODS[name]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(f"unknown coreset method {name!r}; valid: {', '.join(METHODS)}") from None
