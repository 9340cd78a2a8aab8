"""Paired differences between two arms with a bootstrap interval over test images and seeds.

Two arms evaluated on the same test images with the same seeds are paired twice: by seed (the
same data order, initialisation and attack seeds) and by image. The difference of their robust
accuracies is the mean over seeds and images of ``a[s, i] - b[s, i]`` (1 where only ``a`` is
robust on image ``i`` in seed ``s``, -1 where only ``b`` is). Its interval resamples both:
seeds with replacement, then images with replacement, the same images for every seed drawn
(an image hard for one model is hard for the other), and takes the percentiles of the mean.
With 3 seeds the seed level has only 10 distinct draws; the interval is then wide when the
seeds disagree, which is what it should say.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Paired:
    mean: float  # points (percentage points of accuracy)
    low: float
    high: float
    seeds: int
    images: int

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_difference(a: np.ndarray, b: np.ndarray, *, reps: int = 4000, level: float = 0.95,
                      seed: int = 0) -> Paired:
    """``a``, ``b``: boolean ``[seeds, images]``, each row one seed's per-image outcome (robust or
    not), rows and columns paired. The mean difference ``a - b`` in points, with its
    ``level`` bootstrap interval (module docstring)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"paired outcomes need the same [seeds, images] shape, got {a.shape} and {b.shape}")
    d = a.astype(np.int8) - b.astype(np.int8)
    n_seeds, n_images = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(reps)
    for r in range(reps):
        rows = d[rng.integers(0, n_seeds, n_seeds)]
        means[r] = rows[:, rng.integers(0, n_images, n_images)].mean()
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Paired(float(d.mean() * 100), float(low * 100), float(high * 100), n_seeds, n_images)
