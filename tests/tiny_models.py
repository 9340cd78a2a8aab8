"""Tiny classifiers and data for the attack/objective/evaluation tests.

``TinyNet`` follows the project's model interface: float [0, 1] NCHW
input (normalisation inside), last layer ``head: nn.Linear`` whose input is
the penultimate features, ``perceptual_modules()`` listing intermediate
blocks, and BatchNorm layers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

# These models are microscopic: intra-op threading only adds overhead, and on
# a shared 2-core machine OpenMP spin-waiting made forwards ~100x slower.
torch.set_num_threads(1)


class TinyNet(nn.Module):
    """Two conv blocks with BatchNorm, global average pooling and a linear head."""

    def __init__(self, n_classes: int = 10, width: int = 8, in_channels: int = 3) -> None:
        super().__init__()
        self.block1 = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.block2(self.block1((x - 0.5) / 0.25))
        return self.head(self.pool(h).flatten(1))

    def perceptual_modules(self) -> list[nn.Module]:
        return [self.block1, self.block2]


class XYBatch(NamedTuple):
    x: Tensor
    y: Tensor


def make_model(seed: int = 0, n_classes: int = 10, warm_bn: bool = True) -> TinyNet:
    """A TinyNet with seeded weights; ``warm_bn`` gives BN non-trivial running stats."""
    torch.manual_seed(seed)
    model = TinyNet(n_classes=n_classes)
    if warm_bn:
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.rand(16, 3, 8, 8))
    return model


def make_data(n: int = 16, seed: int = 0, n_classes: int = 10, size: int = 8) -> tuple[Tensor, Tensor]:
    """Uniform random images in [0, 1] and random int64 labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return x, y


def fit_briefly(model: nn.Module, x: Tensor, y: Tensor, steps: int = 60, lr: float = 0.05) -> nn.Module:
    """A few full-batch SGD steps so the model is better than chance on (x, y)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model
