"""Norm-ball geometries for the shared projected-gradient attack loop.

A geometry says how to draw a random start inside the ball, how to take an
ascent step from a gradient and how to project back onto the ball. The
attack loop in :mod:`distributed_adcs.attacks.pgd` is written once against
this protocol, so l-inf and l2 PGD (and TRADES' Gaussian start) share it.

All perturbations ``delta`` are NCHW tensors in the same units as the image
(pixel intensity in [0, 1]).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

# Guards divisions by a zero gradient / zero perturbation norm.
_TINY = 1e-12


def per_example_l2(t: Tensor) -> Tensor:
    """l2 norm of each example, shaped [B, 1, 1, ...] for broadcasting."""
    norms = t.flatten(1).norm(p=2, dim=1)
    return norms.view(-1, *([1] * (t.dim() - 1)))


def noise_like(kind: str, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Draws uniform [0,1) ("rand") or standard normal ("randn") noise shaped like ``like``.

    Noise is drawn on the generator's own device (a CPU generator cannot
    fill a CUDA tensor) and then moved to ``like``'s device, so a seeded CPU
    generator gives the same perturbation whatever device the model is on.
    """
    sampler = {"rand": torch.rand, "randn": torch.randn}[kind]
    device = generator.device if generator is not None else like.device
    out = sampler(like.shape, generator=generator, device=device, dtype=like.dtype)
    return out.to(like.device)


@runtime_checkable
class Geometry(Protocol):
    """A norm ball: random start, ascent step and projection."""

    def random_init(self, x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        """Returns a random perturbation inside the eps-ball, shaped like ``x``."""
        ...

    def step(self, delta: Tensor, grad: Tensor, step_size: float) -> Tensor:
        """Returns ``delta`` moved by one ascent step along ``grad``."""
        ...

    def project(self, delta: Tensor, eps: float) -> Tensor:
        """Returns the closest point of the eps-ball to ``delta`` (per example)."""
        ...


class LinfGeometry:
    """l-inf ball: uniform start in the cube, signed-gradient steps, clamping."""

    def random_init(self, x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        """Uniform in [-eps, eps]^d."""
        return (2.0 * noise_like("rand", x, generator) - 1.0) * eps

    def step(self, delta: Tensor, grad: Tensor, step_size: float) -> Tensor:
        """Steepest ascent for the l-inf norm: ``step_size * sign(grad)``."""
        return delta + step_size * grad.sign()

    def project(self, delta: Tensor, eps: float) -> Tensor:
        """Coordinate-wise clamp to [-eps, eps]."""
        return delta.clamp(-eps, eps)


class L2Geometry:
    """l2 ball: uniform start in the ball, normalised-gradient steps, radial projection."""

    def random_init(self, x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        """Uniform in the l2 ball of radius eps (per example).

        Direction: a normalised Gaussian (uniform on the sphere). Radius:
        ``eps * U**(1/d)`` with d the number of pixels, which makes the point
        uniform in the ball's volume. For image-sized d almost all of the
        volume is near the surface, so the radius is close to eps.
        """
        direction = noise_like("randn", x, generator)
        direction = direction / (per_example_l2(direction) + _TINY)
        dim = x[0].numel()
        u = noise_like("rand", x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)), generator)
        return direction * eps * u.pow(1.0 / dim)

    def step(self, delta: Tensor, grad: Tensor, step_size: float) -> Tensor:
        """Steepest ascent for the l2 norm: ``step_size * grad / ||grad||_2``."""
        return delta + step_size * grad / (per_example_l2(grad) + _TINY)

    def project(self, delta: Tensor, eps: float) -> Tensor:
        """Points inside the ball are unchanged; points outside are scaled onto the sphere."""
        norms = per_example_l2(delta)
        scale = torch.clamp(eps / (norms + _TINY), max=1.0)
        return delta * scale


class GaussianStartLinfGeometry(LinfGeometry):
    """l-inf geometry whose random start is ``sigma * N(0, 1)`` (TRADES uses sigma=0.001).

    The start is clamped into the eps-ball so the returned perturbation
    always satisfies the constraint.
    """

    def __init__(self, sigma: float = 0.001) -> None:
        self.sigma = sigma

    def random_init(self, x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        """``sigma * N(0, 1)`` noise, clamped to [-eps, eps]."""
        return (self.sigma * noise_like("randn", x, generator)).clamp(-eps, eps)


GEOMETRIES: dict[str, Geometry] = {"linf": LinfGeometry(), "l2": L2Geometry()}


def resolve_geometry(geometry: str | Geometry) -> Geometry:
    """Returns the geometry object for a registry name or passes an instance through.

    Raises:
        ValueError: for an unknown name.
    """
    if not isinstance(geometry, str):
        return geometry
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown geometry {geometry!r}; known: {sorted(GEOMETRIES)}")
    return GEOMETRIES[geometry]
