"""CIFAR-style residual nets: ResNet-18, PreAct ResNet-18 and Wide ResNets.

All three share one trunk (stem -> stages -> post -> global average pool) and
differ only in the residual block and where the BatchNorm/ReLU pairs sit:

* ``resnet18`` (He et al., 2016): post-activation blocks, BN+ReLU in the stem.
* ``preact_resnet18`` (He et al., 2016b): pre-activation blocks, a bare conv
  stem and a final BN+ReLU before pooling.
* ``wide_resnet`` (Zagoruyko & Komodakis, 2016): the same pre-activation block
  with widths 16k, 32k, 64k and (depth - 4) / 6 blocks per stage.

The stem is a 3x3 conv with no max-pool (the CIFAR convention), and pooling is
adaptive, so 28x28 inputs work as well as 32x32 ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from distributed_adcs.models.base import AdcsModel, ModelShape, init_weights


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d | None:
    """1x1 conv for the shortcut when the block changes shape, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Post-activation block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        proj = projection(in_channels, out_channels, stride)
        self.shortcut = nn.Identity() if proj is None else nn.Sequential(proj, nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block: conv(relu(bn(conv(relu(bn(x)))))) + shortcut.

    When the block changes shape, the projection reads the pre-activated input
    relu(bn(x)), as in both the PreAct ResNet and the Wide ResNet papers' code.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut = projection(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        pre = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        return self.conv2(torch.relu(self.bn2(self.conv1(pre)))) + skip


Block = Callable[[int, int, int], nn.Module]


def make_stages(
    block: Block, in_channels: int, widths: Sequence[int], depths: Sequence[int], strides: Sequence[int]
) -> nn.ModuleList:
    """One ``nn.Sequential`` per stage; only a stage's first block strides or widens."""
    stages = []
    for width, depth, stride in zip(widths, depths, strides, strict=True):
        blocks = [block(in_channels if i == 0 else width, width, stride if i == 0 else 1) for i in range(depth)]
        stages.append(nn.Sequential(*blocks))
        in_channels = width
    return nn.ModuleList(stages)


class ResNet(AdcsModel):
    """stem -> stages -> post -> global average pool -> head.

    Args:
        shape: data description (classes, channels, normalisation).
        stem: maps normalised images to ``stages[0]``'s input.
        stages: residual stages, run in order; also the perceptual modules.
        post: applied after the last stage (BN+ReLU for pre-activation nets).
        features: channels out of the last stage, the penultimate dimension.
    """

    def __init__(
        self, shape: ModelShape, stem: nn.Module, stages: nn.ModuleList, post: nn.Module, features: int
    ) -> None:
        super().__init__(shape)
        self.stem = stem
        self.stages = stages
        self.post = post
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(features, shape.num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.pool(self.post(x))

    def perceptual_modules(self) -> list[nn.Module]:
        return list(self.stages)


def bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())


RESNET18_WIDTHS = (64, 128, 256, 512)
RESNET18_DEPTHS = (2, 2, 2, 2)
RESNET18_STRIDES = (1, 2, 2, 2)


def resnet18(shape: ModelShape) -> ResNet:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool."""
    stem = nn.Sequential(conv3x3(shape.in_channels, 64), bn_relu(64))
    stages = make_stages(BasicBlock, 64, RESNET18_WIDTHS, RESNET18_DEPTHS, RESNET18_STRIDES)
    return ResNet(shape, stem, stages, nn.Identity(), RESNET18_WIDTHS[-1])


def preact_resnet18(shape: ModelShape) -> ResNet:
    """Pre-activation ResNet-18."""
    stages = make_stages(PreActBlock, 64, RESNET18_WIDTHS, RESNET18_DEPTHS, RESNET18_STRIDES)
    return ResNet(shape, conv3x3(shape.in_channels, 64), stages, bn_relu(RESNET18_WIDTHS[-1]), RESNET18_WIDTHS[-1])


def wide_resnet(shape: ModelShape, *, depth: int, width: int) -> ResNet:
    """WRN-``depth``-``width``: three pre-activation stages of (depth - 4) / 6 blocks; ``depth``
    and ``width`` are a ``WideResNetParams`` (specs/models.py), which checks depth = 6n + 4."""
    n = (depth - 4) // 6
    widths = tuple(c * width for c in (16, 32, 64))
    stages = make_stages(PreActBlock, 16, widths, (n, n, n), (1, 2, 2))
    return ResNet(shape, conv3x3(shape.in_channels, 16), stages, bn_relu(widths[-1]), widths[-1])
