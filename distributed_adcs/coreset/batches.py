"""Per-batch coreset selection (GradMatch-PB / CRAIG-PB style).

The examples of each group (a class when ``per_class``, else everything) are
shuffled with the seeded generator and cut into consecutive mini-batches of
``batch_size`` (the last one may be smaller).  Each batch is represented by its
mean embedding; the selector picks batches, with each batch's size passed as
its ``mass``; the chosen batches expand to all their members.  A member of a
chosen batch ``b`` gets weight ``w_b / |b|``, where ``w_b`` is the selector's
weight in example units, so for CRAIG / random / full the member weights of a
group sum exactly to the group size, and with equal batch sizes every member
simply carries its batch's weight in batches (CRAIG: the number of batches it
stands for).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from distributed_adcs.coreset.budgets import batches_for_budget, group_shares
from distributed_adcs.coreset.types import (
    Coreset,
    check_budget,
    check_embeddings,
    check_labels,
    seeded_generator,
)


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _partition(members: Tensor, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Shuffle ``members`` and cut them into batches.

    Returns:
        ``(ordered, batch_id, sizes)``: members in shuffled order, the batch of
        each (``position // batch_size``), and float64 batch sizes.
    """
    n = members.numel()
    perm = torch.randperm(n, generator=generator).to(members.device)
    batch_id = torch.arange(n, device=members.device) // batch_size
    sizes = torch.bincount(batch_id).to(torch.float64)
    return members[perm], batch_id, sizes


def _partitions(labels: Tensor, budget: int, batch_size: int, per_class: bool,
                generator: torch.Generator) -> list[tuple[int, Tensor, Tensor, Tensor]]:
    """Every group's ``(share, ordered, batch_id, sizes)``, drawn before any selection."""
    return [(share, *_partition(members, batch_size, generator))
            for members, share in group_shares(labels, budget, per_class)]


def make_batches(labels: Tensor, batch_size: int, *, per_class: bool = True, seed: int = 0) -> list[list[Tensor]]:
    """The mini-batches :func:`select_batches` uses for the same arguments.

    Args:
        labels: ``[n]`` integer labels.
        batch_size: examples per batch (the last batch of a group may be smaller).
        per_class: batch within each class (ascending label) or globally.
        seed: same seed as given to :func:`select_batches`.

    Returns:
        Per group, the list of batches (int64 global positions).
    """
    batch_size = _check_batch_size(batch_size)
    n = int(labels.numel())
    parts = _partitions(labels, n, batch_size, per_class, seeded_generator(seed))
    return [list(torch.split(ordered, batch_size)) for _, ordered, _, _ in parts]


def select_batches(
    method: str,
    embeddings: Tensor,
    labels: Tensor,
    budget: int,
    *,
    batch_size: int,
    per_class: bool = True,
    seed: int = 0,
) -> Coreset:
    """Per-batch selection: pick whole random mini-batches (see module doc).

    Args:
        method: a key of ``distributed_adcs.methods.METHODS``.
        embeddings: ``[n, d]`` float tensor.
        labels: ``[n]`` int64 labels (same device).
        budget: positive integer number of examples (clipped to ``n``), split
            over classes by ``class_budgets`` when ``per_class``; a group's share
            becomes ``round(share / batch_size)`` batches (halves up, at least 1,
            all batches for the whole group), so the covered count is within
            half a batch of the share per group.
        batch_size: examples per mini-batch.
        per_class: batch and select within each class (default) or globally.
        seed: seeds the batching and the selector.

    Returns:
        A :class:`Coreset` of the chosen batches' members, ascending indices;
        ``budget >= n`` returns everything with unit weights.
    """
    from distributed_adcs.coreset import get_method, get_selector, group_budget  # the package imports this module

    spec = get_method(method)
    selector = get_selector(method)
    check_embeddings(embeddings)
    check_labels(labels, embeddings)
    budget = group_budget(spec, check_budget(budget, embeddings.shape[0]), embeddings.shape[0])
    batch_size = _check_batch_size(batch_size)
    generator = seeded_generator(seed)
    indices, weights = [], []
    for share, ordered, batch_id, sizes in _partitions(labels, budget, batch_size, per_class, generator):
        n_pick = batches_for_budget(share, ordered.numel(), batch_size)
        if n_pick == 0:
            continue
        means = torch.zeros(sizes.numel(), embeddings.shape[1], dtype=torch.float64, device=embeddings.device)
        means.index_add_(0, batch_id, embeddings[ordered].to(torch.float64))
        means = (means / sizes[:, None]).to(embeddings.dtype)
        chosen, w = selector(means, n_pick, generator=generator, mass=sizes)
        per_batch = torch.zeros_like(sizes)
        per_batch[chosen] = w.to(torch.float64) / sizes[chosen]
        picked = torch.zeros(sizes.numel(), dtype=torch.bool, device=sizes.device)
        picked[chosen] = True
        keep = picked[batch_id]
        indices.append(ordered[keep])
        weights.append(per_batch[batch_id[keep]])
    return Coreset.from_parts(indices, weights)
