"""The model registry: every fact about a model architecture, stated once.

A new model is one module plus one entry in ``MODELS``. The module provides a builder
``fn(shape: ModelShape, **params) -> AdcsModel`` (``distributed_adcs.models.base``), called on
the current default device, whose keyword arguments are the fields of the entry's ``params``.
The model it returns:

- takes float images in [0, 1], NCHW, and normalises them itself first (``AdcsModel``'s
  ``normalize``, built from ``shape.mean`` / ``shape.std``), so attacks never see the data's
  statistics;
- ends in ``self.head``, an ``nn.Linear`` whose input is the penultimate feature vector: the
  coreset embeddings (``capture_penultimate``) and the last-layer gradients read it;
- implements ``forward_features`` (everything before ``head``) and ``perceptual_modules()``
  (the activations PAT's self-LPIPS distance compares).

tests/test_models.py checks these properties for every registered entry.

Fields of :class:`ModelSpec`: ``build`` (``"module:attribute"`` of the builder) and ``params``
(the dataclass of the architecture's own parameters, ``model.params``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import check
from . import NoParams, lookup, resolve


@dataclass(frozen=True, kw_only=True, slots=True)
class WideResNetParams:
    depth: int = 28  # total depth, 6n + 4 (n pre-activation blocks per stage)
    width: int = 10  # widening factor of the (16, 32, 64) channels

    def __post_init__(self) -> None:
        check(self.depth >= 10 and (self.depth - 4) % 6 == 0, "depth",
              f"must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got {self.depth}")
        check(self.width >= 1, "width", f"must be >= 1, got {self.width}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSpec:
    name: str
    summary: str  # one line for docs
    build: str  # "module:attribute" of fn(shape: ModelShape, **params) -> AdcsModel
    params: type = NoParams

    def build_fn(self) -> Callable[..., Any]:
        return resolve(self.build)


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec(name="small_cnn", summary="two stride-2 conv blocks and an MLP, sized for 2 CPU cores",
              build="distributed_adcs.models.small_cnn:small_cnn"),
    ModelSpec(name="resnet18", summary="ResNet-18 with a 3x3 stride-1 stem, no max-pool",
              build="distributed_adcs.models.resnet:resnet18"),
    ModelSpec(name="preact_resnet18", summary="pre-activation ResNet-18",
              build="distributed_adcs.models.resnet:preact_resnet18"),
    ModelSpec(name="wide_resnet", summary="WRN-depth-width (Zagoruyko & Komodakis), pre-activation",
              build="distributed_adcs.models.resnet:wide_resnet", params=WideResNetParams),
)}


def get_model(name: object) -> ModelSpec:
    """The spec of ``name``; ``ConfigError`` (a ``ValueError``) naming the valid ones otherwise."""
    return lookup(MODELS, name, "model.name")
