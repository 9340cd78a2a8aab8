"""Pure-tensor coreset selection (torch only).

Usage::

    from distributed_adcs.coreset import select
    coreset = select("craig", embeddings, labels, budget=500, seed=epoch)
    # coreset.indices: ascending int64 positions, coreset.weights: float32

Methods are the entries of the registry ``distributed_adcs.methods.METHODS``; each names its
selector: ``craig`` (facility location, :mod:`.facility`), ``gradmatch`` (non-negative OMP,
:mod:`.gradmatch`), ``random`` and ``full`` (:mod:`.simple`).  :func:`select_batches` is the
per-batch variant (:mod:`.batches`).  Everything runs on the device of the input tensors.
"""

from __future__ import annotations

from torch import Tensor

from distributed_adcs.coreset.batches import make_batches, select_batches
from distributed_adcs.coreset.budgets import class_budgets, group_shares
from distributed_adcs.coreset.facility import (
    craig,
    facility_location_greedy,
    facility_location_value,
    naive_facility_location_greedy,
    similarity_matrix,
)
from distributed_adcs.coreset.simple import full, random_subset
from distributed_adcs.coreset.types import (
    Coreset,
    SelectorFn,
    check_budget,
    check_embeddings,
    check_labels,
    seeded_generator,
)
from distributed_adcs.methods import METHODS, MethodSpec, get_method


def get_selector(method: str) -> SelectorFn:
    """The per-group selector of a registered method.

    Raises:
        ValueError: unknown name (the message lists the valid ones), or a method that selects
            from training records (``adaptive``: call its selector with the records).
    """
    spec = get_method(method)
    if spec.needs_records:
        raise ValueError(f"coreset method {method!r} selects from training records, not from embeddings")
    return spec.select_fn()


def group_budget(spec: MethodSpec, budget: int, n: int) -> int:
    """The number of examples to take from ``n``: a method that trains on all ignores ``budget``."""
    return n if spec.trains_on_all else budget


def select(
    method: str,
    embeddings: Tensor,
    labels: Tensor,
    budget: int,
    *,
    per_class: bool = True,
    seed: int = 0,
) -> Coreset:
    """Select a weighted coreset.

    Args:
        method: a key of ``distributed_adcs.methods.METHODS``.
        embeddings: ``[n, d]`` float tensor (e.g. last-layer gradients).
        labels: ``[n]`` int64 class labels, same device.
        budget: positive integer number of examples (clipped to ``n``).  With
            ``per_class`` it is split over classes by :func:`class_budgets`, so
            every class and the total are met exactly.
        per_class: select within each class separately (default) or globally.
        seed: seeds every random choice; pass a new seed to redraw.

    Returns:
        A :class:`Coreset` with exactly ``min(budget, n)`` ascending indices
        (``full`` ignores the budget and returns everything).
        ``budget >= n`` returns every example with unit weights, whatever the method.
    """
    spec = get_method(method)
    selector = get_selector(method)
    check_embeddings(embeddings)
    check_labels(labels, embeddings)
    budget = group_budget(spec, check_budget(budget, embeddings.shape[0]), embeddings.shape[0])
    generator = seeded_generator(seed)
    indices, weights = [], []
    for members, share in group_shares(labels, budget, per_class):
        if share == 0:
            continue
        local, w = selector(embeddings[members], share, generator=generator)
        indices.append(members[local])
        weights.append(w)
    return Coreset.from_parts(indices, weights)


__all__ = [
    "Coreset",
    "METHODS",
    "class_budgets",
    "craig",
    "facility_location_greedy",
    "facility_location_value",
    "full",
    "get_selector",
    "group_budget",
    "make_batches",
    "naive_facility_location_greedy",
    "random_subset",
    "select",
    "select_batches",
    "similarity_matrix",
]
