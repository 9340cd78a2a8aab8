"""Adversarial attacks: one projected-gradient loop for every norm, and perceptual attacks."""

from distributed_adcs.attacks.backbones import BACKBONES, ImageNetFeatures, load_backbone
from distributed_adcs.attacks.geometry import (
    GEOMETRIES,
    GaussianStartLinfGeometry,
    Geometry,
    L2Geometry,
    LinfGeometry,
    resolve_geometry,
)
from distributed_adcs.attacks.perceptual import PerceptualDistance, fast_lpa, project_perceptual
from distributed_adcs.attacks.pgd import AttackLoss, attack, bn_mode, clip_to_box, frozen_parameters

__all__ = [
    "BACKBONES",
    "GEOMETRIES",
    "AttackLoss",
    "GaussianStartLinfGeometry",
    "Geometry",
    "ImageNetFeatures",
    "L2Geometry",
    "LinfGeometry",
    "PerceptualDistance",
    "attack",
    "bn_mode",
    "clip_to_box",
    "fast_lpa",
    "frozen_parameters",
    "load_backbone",
    "project_perceptual",
    "resolve_geometry",
]
