"""Pretrained feature backbones for an external LPIPS-style perceptual distance.

Only local state-dict files are read (``torch.load(weights_only=True)``);
nothing is downloaded. The architecture is recognised from the file's keys
and tensor shapes, so a plain torchvision ``alexnet`` or ``vgg16`` state dict
works, either for the whole network or only its ``features`` part (the
classifier weights are ignored either way).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

# ImageNet statistics expected by torchvision's pretrained backbones.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _torchvision_model(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision  # here, not at import: it costs every Ray worker a second (torch._dynamo)

        return getattr(torchvision.models, name)(weights=None)
    return build


# name -> (constructor of the full torchvision network, indices in
# ``.features`` of the ReLUs whose outputs LPIPS compares: relu1..relu5 for
# AlexNet, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 for VGG-16).
BACKBONES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "alexnet": (_torchvision_model("alexnet"), (1, 4, 7, 9, 11)),
    "vgg16": (_torchvision_model("vgg16"), (3, 8, 15, 22, 29)),
}


class ImageNetFeatures(nn.Module):
    """ImageNet normalisation followed by a frozen convolutional ``features`` stack.

    Input: float [0, 1] NCHW images. AlexNet needs images of at least about
    31x31 pixels (its first layer has stride 4), VGG-16 at least 16x16.
    """

    mean: Tensor  # buffers registered in __init__
    std: Tensor

    def __init__(self, features: nn.Sequential, layer_indices: tuple[int, ...]) -> None:
        super().__init__()
        # Layers after the last compared ReLU are never needed (and AlexNet's
        # final max-pool would reject CIFAR-sized inputs).
        self.features = features[: max(layer_indices) + 1]
        self.layer_indices = layer_indices
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        for module in self.features.modules():
            # Outputs are hooked; keep them from being overwritten in place.
            if hasattr(module, "inplace"):
                setattr(module, "inplace", False)  # a flag, which nn.Module.__setattr__'s types omit
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        """Runs the feature stack on normalised images."""
        return self.features((x - self.mean) / self.std)

    def perceptual_modules(self) -> list[nn.Module]:
        """The ReLU layers whose activations define the distance."""
        return [self.features[i] for i in self.layer_indices]


def _features_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keeps the ``features.*`` entries of a full-network state dict, prefix removed."""
    if any(key.startswith("features.") for key in state):
        return {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    return dict(state)


def _matches(module: nn.Module, state: dict[str, Tensor]) -> bool:
    """True when ``state`` has exactly the module's keys with the same shapes."""
    expected = module.state_dict()
    if set(expected) != set(state):
        return False
    return all(tuple(expected[k].shape) == tuple(state[k].shape) for k in expected)


def load_backbone(weights_path: str | Path) -> ImageNetFeatures:
    """Loads an AlexNet or VGG-16 feature backbone from a local state-dict file.

    Args:
        weights_path: path to a torchvision ``alexnet``/``vgg16`` state dict
            (full network or its ``features`` part).

    Returns:
        A frozen, eval-mode :class:`ImageNetFeatures` on the CPU.

    Raises:
        ValueError: if the file matches none of :data:`BACKBONES`.
    """
    state = _features_state(torch.load(weights_path, map_location="cpu", weights_only=True))
    for name, (build, layer_indices) in BACKBONES.items():
        # Build on the meta device: the classifier (most of the parameters)
        # is never allocated, only the features stack is materialised.
        with torch.device("meta"):
            features = typing.cast(nn.Sequential, build().features)  # alexnet's and vgg16's
        if not _matches(features, state):
            continue
        features = features.to_empty(device="cpu")
        features.load_state_dict(state, strict=True)
        return ImageNetFeatures(features, layer_indices)
    raise ValueError(
        f"{weights_path}: state dict matches none of the known backbones {sorted(BACKBONES)}"
    )
