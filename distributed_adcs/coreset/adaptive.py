"""``adaptive``: a subset sampled from the adversarial losses that training already records.

No attack, no embeddings, no greedy. Each epoch the training loop records every visited
example's adversarial loss (``engine.job``); the next subset is drawn from those records:

- per class ``c`` a quota ``k_c`` (:func:`class_quotas`): proportional to the class size times
  its robust error on the validation split, floored, so that classes the model still gets
  wrong are visited more (DRoP-style) and none is starved;
- within a class, inclusion probabilities ``pi_i`` proportional to a mixture of the recorded
  loss and a uniform share (``uniform``, default one half: loss-proportional sampling
  alone chases the hardest examples, which in adversarial training are often memorised
  noise), capped at 1 (:func:`inclusion_probabilities`);
- examples without a record yet are always included (``pi = 1``);
- a fixed-size draw with exactly those inclusion probabilities (systematic sampling over a
  random order, :func:`systematic_sample`), each drawn example weighted ``1 / pi_i``
  (Horvitz-Thompson): ``sum_i w_i loss_i`` is an unbiased estimate of the class's total loss,
  and the weights count examples (their expected sum is the class size), as every selector's do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distributed_adcs.coreset.types import Coreset, check_budget, seeded_generator

_EPS = 1e-12


def class_quotas(sizes: list[int], budget: int, errors: list[float] | None = None, floor: float = 0.1) -> list[int]:
    """Split ``budget`` over classes proportionally to ``size_c * max(error_c, floor)``.

    Largest remainders get the leftover units (ties to the earlier class), and no class gets
    more than its size (its excess goes to the others). ``errors=None`` splits by size alone.
    """
    total = sum(sizes)
    budget = min(budget, total)
    if errors is None:
        errors = [1.0] * len(sizes)
    if len(errors) != len(sizes):
        raise ValueError(f"{len(errors)} class errors for {len(sizes)} classes")
    weight = [s * max(float(e), floor, _EPS) for s, e in zip(sizes, errors)]
    quotas = [0] * len(sizes)
    open_ = [c for c, s in enumerate(sizes) if s > 0]
    left = budget
    while left > 0 and open_:
        mass = sum(weight[c] for c in open_)
        raw = {c: left * weight[c] / mass for c in open_}
        share = {c: min(int(raw[c]), sizes[c] - quotas[c]) for c in open_}
        rest = left - sum(share.values())
        for c in sorted(open_, key=lambda c: (-(raw[c] - int(raw[c])), c)):
            if rest == 0:
                break
            if quotas[c] + share[c] < sizes[c]:
                share[c] += 1
                rest -= 1
        for c in open_:
            quotas[c] += share[c]
        left = budget - sum(quotas)
        open_ = [c for c in open_ if quotas[c] < sizes[c]]
    return quotas


def inclusion_probabilities(q: Tensor, k: int) -> Tensor:
    """``pi = k * q / sum(q)``, capped at 1 with the excess spread over the rest (sum ``k``).

    Args:
        q: non-negative sampling masses ``[n]`` with at least ``k`` positive entries... or fewer,
            in which case every positive one gets ``pi = 1`` and zeros share the remainder
            uniformly. A remaining total mass of at most 1e-12 counts as zero: such masses share
            uniformly with the zeros (``q = [1e-12, 0, 0]``, ``k = 2`` gives 2/3 each).
        k: sample size, ``0 <= k <= n``.
    """
    n = q.numel()
    q = q.double().clamp_min(0)
    if k >= n:
        return torch.ones(n, dtype=torch.float64)
    pi = torch.zeros(n, dtype=torch.float64)
    capped = torch.zeros(n, dtype=torch.bool)
    while True:
        free = ~capped
        need = k - int(capped.sum())
        mass = q[free].sum()
        if need <= 0:
            break
        if float(mass) <= _EPS:  # only zero masses left: spread what is needed uniformly
            pi[free] = need / int(free.sum())
            break
        trial = need * q / mass
        over = free & (trial >= 1.0)
        if not bool(over.any()):
            pi[free] = trial[free]
            break
        capped |= over
        pi[over] = 1.0
    return pi


def systematic_sample(pi: Tensor, generator: torch.Generator) -> Tensor:
    """Exactly ``round(sum(pi))`` distinct indices, index ``i`` included with probability ``pi_i``.

    Walks a random order of the items, laying their ``pi`` end to end on a line, and takes the
    items under the points ``u, u + 1, u + 2, ...`` for one uniform ``u`` in [0, 1): an item of
    length ``pi_i <= 1`` holds at most one point, and holds one with probability ``pi_i``.
    """
    n = pi.numel()
    k = int(round(float(pi.sum())))
    if k == 0:
        return torch.empty(0, dtype=torch.int64)
    order = torch.randperm(n, generator=generator)
    ends = torch.cumsum(pi[order], 0)
    ends[-1] = max(float(ends[-1]), float(k))  # float round-off must not lose the last point
    u = float(torch.rand(1, generator=generator, dtype=torch.float64))
    points = u + torch.arange(k, dtype=torch.float64)
    hit = torch.searchsorted(ends, points, right=True).clamp_max(n - 1)
    return order[hit]


def adaptive(scores: Tensor, labels: Tensor, budget: int, *, class_error: Tensor | None = None,
             uniform: float = 0.5, floor: float = 0.1, seed: int = 0) -> Coreset:
    """Sample a weighted subset from per-example training records (module docstring).

    Args:
        scores: ``[n]`` recorded adversarial losses; NaN where an example has no record yet.
        labels: ``[n]`` int64 class labels.
        budget: the expected subset size (the subset is larger only when more examples than
            the budget have no record: those are always taken).
        class_error: ``[C]`` robust error per class on the validation split (indexed by label),
            or None to split the budget by class size.
        uniform: the uniform share of the sampling mixture, in [0, 1].
        floor: the smallest class error a quota is computed with.
        seed: seeds the draw.

    Returns:
        A :class:`Coreset` (ascending indices, weights ``1 / pi`` in example units).
    """
    if scores.shape != labels.shape or scores.dim() != 1:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must be equal-length 1-D")
    if not 0.0 <= uniform <= 1.0:
        raise ValueError(f"uniform must be in [0, 1], got {uniform}")
    n = labels.numel()
    budget = check_budget(budget, n)
    generator = seeded_generator(seed)
    classes, sizes = labels.cpu().unique(sorted=True, return_counts=True)
    errors = None if class_error is None else [float(class_error[int(c)]) for c in classes]
    quotas = class_quotas(sizes.tolist(), budget, errors, floor)
    scores, labels = scores.detach().double().cpu(), labels.cpu()
    indices, weights = [], []
    for c, k in zip(classes.tolist(), quotas):
        members = (labels == c).nonzero().flatten()
        s = scores[members]
        unseen = torch.isnan(s)
        take = members[unseen]  # no record yet: always visited
        k_left = max(k - take.numel(), 0)
        seen_members, seen = members[~unseen], s[~unseen].clamp_min(0)
        if k_left and seen_members.numel():
            loss_part = seen / seen.sum() if float(seen.sum()) > _EPS else torch.full_like(seen, 1 / seen.numel())
            q = (1 - uniform) * loss_part + uniform / seen.numel()
            pi = inclusion_probabilities(q, min(k_left, seen_members.numel()))
            picked = systematic_sample(pi, generator)
            indices += [take, seen_members[picked]]
            weights += [torch.ones(take.numel()), (1.0 / pi[picked]).float()]
        else:
            indices.append(take)
            weights.append(torch.ones(take.numel()))
    return Coreset.from_parts(indices, weights)
