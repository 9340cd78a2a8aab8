"""Splitting an example budget over classes (largest-remainder apportionment)."""

from __future__ import annotations

import torch
from torch import Tensor

from distributed_adcs.coreset.types import check_budget


def apportion(sizes: list[int], budget: int) -> list[int]:
    """Split ``budget`` over groups proportionally to ``sizes`` (largest remainder).

    Each group first gets ``floor(budget * size / total)``; the leftover units go,
    one each, to the groups with the largest fractional remainders (ties: the
    earlier group).  Arithmetic is exact (integers only).

    Args:
        sizes: positive group sizes.
        budget: total to hand out, ``0 <= budget <= sum(sizes)``.

    Returns:
        Per-group shares summing exactly to ``budget``, each ``<= size``
        (a group with a remainder has ``floor < quota <= size``, so +1 fits).
    """
    total = sum(sizes)
    if not 0 <= budget <= total:
        raise ValueError(f"budget {budget} outside [0, {total}]")
    shares = [budget * s // total for s in sizes]
    remainders = [budget * s % total for s in sizes]
    leftover = budget - sum(shares)
    order = sorted(range(len(sizes)), key=lambda g: (-remainders[g], g))
    for g in order[:leftover]:
        shares[g] += 1
    return shares


def class_budgets(labels: Tensor, budget: int) -> dict[int, int]:
    """Per-class budgets proportional to class sizes.

    Args:
        labels: integer class labels, shape ``[n]``.
        budget: positive integer total; clipped to ``n``.

    Returns:
        ``{class: budget_c}`` for every class present (ascending class order),
        with ``sum == min(budget, n)`` and ``0 <= budget_c <= size_c``.
        Leftover units after flooring go to the largest remainders, ties to the
        smaller class label.
    """
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex():
        raise ValueError("labels must be a 1-D integer tensor")
    if labels.numel() == 0:
        raise ValueError("labels must be non-empty")
    budget = check_budget(budget, int(labels.numel()))
    classes, counts = labels.unique(sorted=True, return_counts=True)
    shares = apportion([int(c) for c in counts.tolist()], budget)
    return {int(c): s for c, s in zip(classes.tolist(), shares)}


def group_shares(labels: Tensor, budget: int, per_class: bool) -> list[tuple[Tensor, int]]:
    """Split the examples into selection groups and give each its budget share.

    Args:
        labels: integer class labels ``[n]``.
        budget: total budget, ``1 <= budget <= n``.
        per_class: one group per class (ascending label, shares from
            :func:`class_budgets`) or a single group holding everything.

    Returns:
        ``[(members, share)]``: ``members`` are ascending global positions (int64,
        on the labels' device) and ``share`` the group's budget (may be 0).
    """
    n = int(labels.numel())
    if not per_class:
        return [(torch.arange(n, device=labels.device), budget)]
    order = torch.argsort(labels, stable=True)  # stable: members stay ascending
    shares = class_budgets(labels, budget)
    sizes = labels.unique(sorted=True, return_counts=True)[1].tolist()
    groups = torch.split(order, sizes)
    return list(zip(groups, shares.values()))


def batches_for_budget(share: int, group_size: int, batch_size: int) -> int:
    """Number of mini-batches that spends about ``share`` examples of a group.

    ``round(share / batch_size)`` (halves up), at least 1 for a positive share,
    and every batch when the share is the whole group (so a full budget keeps
    everything even when the last batch is partial).
    """
    n_batches = -(-group_size // batch_size)
    if share <= 0:
        return 0
    if share >= group_size:
        return n_batches
    return min(n_batches, max(1, (2 * share + batch_size) // (2 * batch_size)))
