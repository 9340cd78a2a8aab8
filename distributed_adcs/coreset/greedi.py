"""Second rounds of the two-round (GreeDi) merge: pure functions over shard candidates.

Round one (on each shard) keeps per-class candidates with their local weights: the number of
the shard's examples each stands for. Round two (on the driver) selects ``k`` of the pooled
candidates and carries the round-one weights through, so the final weights still count
examples of the whole training set. Each method's registry entry names its second round
(``distributed_adcs.methods``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from distributed_adcs.coreset.facility import craig
from distributed_adcs.coreset.gradmatch import gradmatch
from distributed_adcs.coreset.types import check_budget, check_embeddings, seeded_generator


def craig_second_round(emb: Tensor, w: Tensor, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """Weighted facility location over the candidates: a candidate standing for ``w_j``
    examples counts ``w_j`` times, as the examples themselves would in the exact merge; each
    chosen one gets the round-one weight of every candidate nearest to it (so the weights sum
    to the examples the candidates stood for)."""
    check_embeddings(emb)
    k = check_budget(k, emb.shape[0])
    # round-one weights count examples (integers); a duplicate pick's 0 still counts as itself
    counts = w.double().round().clamp_min(1)
    idx, _ = craig(emb, k, generator=seeded_generator(seed), mass=counts, weighted=True)
    idx = idx.sort().values
    return idx, torch.zeros(k, dtype=torch.float64).index_add_(0, nearest_centre(emb, idx), w.double()).float()


def nearest_centre(emb: Tensor, idx: Tensor, rows: int = 4096) -> Tensor:
    """Each row's nearest chosen row (float64), in blocks of ``rows``: one n x k distance matrix
    would be 34.6 GB at 120k candidates and k = 36k."""
    centres = emb[idx].double()
    return torch.cat([torch.cdist(emb[r:r + rows].double(), centres).argmin(1) for r in range(0, emb.shape[0], rows)])


def gradmatch_second_round(emb: Tensor, w: Tensor, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """Match the weighted candidate gradients ``sum_j w_j g_j``; a chosen candidate's weight is
    its matching coefficient times its round-one weight."""
    check_embeddings(emb)
    k = check_budget(k, emb.shape[0])
    idx, coef = gradmatch(emb * w[:, None], k, generator=seeded_generator(seed))
    order = idx.argsort()
    idx, coef = idx[order], coef[order]
    return idx, coef * w[idx]
