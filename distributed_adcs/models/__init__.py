"""Model zoo: every model takes [0, 1] NCHW images and normalises them itself.

Usage::

    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28, mean=[0.286], std=[0.353])
    with capture_penultimate(model) as pen:
        logits = model(images)  # pen.features: the head's input, [B, D]
    with capture_activations(model, model.perceptual_modules()) as acts:
        model(images)  # acts: one output per perceptual module
"""

from distributed_adcs.models.base import PRECISIONS, AdcsModel, ModelShape, Normalize, set_precision
from distributed_adcs.models.capture import PenultimateFeatures, capture_activations, capture_penultimate
from distributed_adcs.models.counting import PassCounter
from distributed_adcs.models.registry import MODELS, build_model

__all__ = [
    "MODELS",
    "PRECISIONS",
    "AdcsModel",
    "ModelShape",
    "Normalize",
    "PassCounter",
    "PenultimateFeatures",
    "build_model",
    "capture_activations",
    "capture_penultimate",
    "set_precision",
]
