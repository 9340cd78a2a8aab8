"""A small BatchNorm conv net sized for adversarial training on 2 CPU cores.

Downsampling is by stride-2 convolutions, not max-pooling: on this project's
2-core Xeon, ``max_pool2d_with_indices`` took 39% of the CPU time of a PGD-10
batch (torch 2.14, NCHW), and in a 2-epoch PGD-AT trial on 12.8k
Fashion-MNIST images the stride-2 net with channels (32, 64) was both cheaper
(54 vs 78 CPU s) and more accurate (clean 0.756 vs 0.732, PGD-10 0.613 vs
0.595 on 2k test images, one seed) than conv-pool nets with channels (16, 32).
Cost at 28x28: about 1.1M multiply-adds per image forward, 151k parameters.
See ``benchmarks/bench_small_cnn.py`` for epoch times.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from distributed_adcs.models.base import AdcsModel, ModelShape, init_weights


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 stride-2 conv (halves H and W, rounding up), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(AdcsModel):
    """Stride-2 conv-BN-ReLU blocks, adaptive pooling to a fixed grid, a one-layer MLP, a linear head.

    Args:
        shape: the data it is built for (classes, channels, normalisation).
        channels: output channels of each conv block.
        pooled_size: side of the grid the last block is average-pooled to,
            so every image size gives the same flat size.
        hidden: penultimate feature dimension (the input to ``head``).
    """

    def __init__(
        self,
        shape: ModelShape,
        channels: Sequence[int] = (32, 64),
        pooled_size: int = 4,
        hidden: int = 128,
    ) -> None:
        super().__init__(shape)
        widths = [shape.in_channels, *channels]
        self.blocks = nn.ModuleList(conv_bn_relu(a, b) for a, b in zip(widths, widths[1:]))
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(widths[-1] * pooled_size**2, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(hidden, shape.num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.mlp(self.pool(x))

    def perceptual_modules(self) -> list[nn.Module]:
        return list(self.blocks)


def small_cnn(shape: ModelShape) -> SmallCNN:
    """Registry builder for ``SmallCNN`` with its default widths."""
    return SmallCNN(shape)
