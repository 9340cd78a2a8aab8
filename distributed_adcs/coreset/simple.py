"""Baseline selectors: the full group and a uniform random subset."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from distributed_adcs.coreset.types import check_budget, check_embeddings, check_mass


def full(
    embeddings: Tensor,
    budget: Optional[int] = None,
    *,
    generator: Optional[torch.Generator] = None,
    mass: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """Select every row.

    Args:
        embeddings: ``[n, d]`` float tensor (only its length and device are used).
        budget: ignored (kept for the common selector signature).
        generator: ignored.
        mass: optional per-row example counts (default 1).

    Returns:
        ``(arange(n), mass)`` -- unit weights by default.
    """
    check_embeddings(embeddings)
    n = embeddings.shape[0]
    weights = check_mass(mass, embeddings).to(torch.float32)
    return torch.arange(n, device=embeddings.device), weights


def random_subset(
    embeddings: Tensor,
    budget: int,
    *,
    generator: Optional[torch.Generator] = None,
    mass: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """Uniform sample without replacement.

    The permutation is drawn on the CPU from ``generator`` (a CPU
    ``torch.Generator``; a fresh unseeded one when ``None``), so the same seed
    gives the same subset on every device.  Callers redraw by passing a new seed.

    Args:
        embeddings: ``[n, d]`` float tensor (only its length and device are used).
        budget: number of rows to keep (clipped to ``n``).
        generator: CPU random generator.
        mass: optional per-row example counts (default 1).

    Returns:
        ``(indices, weights)`` with indices in draw order; each chosen row gets
        ``mass_j * total_mass / chosen_mass``, so the weights sum to the group's
        total mass (= group size for unit masses: ``n / budget`` each).
    """
    check_embeddings(embeddings)
    n = embeddings.shape[0]
    budget = check_budget(budget, n)
    if budget >= n:
        return full(embeddings, mass=mass)
    masses = check_mass(mass, embeddings)
    perm = torch.randperm(n, generator=generator)[:budget].to(embeddings.device)
    chosen = masses[perm]
    weights = chosen * (masses.sum() / chosen.sum())
    return perm, weights.to(torch.float32)
