"""Perceptual (LPIPS-style) distance and the fast Lagrangian perceptual attack.

Implements the threat model of Laidlaw, Singla & Feizi, "Perceptual
Adversarial Robustness: Defense Against Unseen Threat Models" (ICLR 2021).

Distance. For a feature network with hooked layers l = 1..L, each
activation ``a_l`` (shape [B, C, H, W] or [B, C]) is normalised to unit l2
norm over the channel dimension at every spatial position. Then

    d(x, x')^2 = sum_l mean_{h,w} sum_c (a_l(x) - a_l(x'))^2

i.e. LPIPS with uniform (all-ones) linear weights, and d is its square
root. ``d`` is in "LPIPS units", not pixel units: its scale depends on the
feature network. With the model's own features ("self-bootstrapped"
LPIPS, PAT-self) the paper trains with a bound of 0.5 on CIFAR-10.

Attack. Fast-LPA maximises ``loss(x_adv) - lambda * max(0, d(x, x_adv) - eps)``
by normalised-gradient ascent. Each step is rescaled so that it moves the
perceptual distance by about ``step_size`` (the rate of change of d along
the step direction is estimated by a finite difference of length ``h``);
the step size decays by 10x over the run while lambda grows geometrically
by 10x, to ``lam`` (step t of T: ``lam * 0.1 ** (1 - t / T)``), the schedule
of the paper's code (``FastLagrangePerceptualAttack``). A final bisection
along the segment from x to x_adv pulls every example with d > eps back
inside the ball, so the bound holds (the paper's training attack leaves it
soft: docs/objectives.md, "PAT against the paper").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distributed_adcs.attacks.geometry import noise_like, per_example_l2
from distributed_adcs.attacks.pgd import AttackLoss, clip_to_box, frozen_parameters

_TINY = 1e-10


def _channel_normalise(a: Tensor) -> Tensor:
    """Scales each spatial position's channel vector to unit l2 norm."""
    return a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + _TINY)


def _safe_sqrt(s: Tensor) -> Tensor:
    """sqrt with an exact 0 at s == 0 and a finite gradient everywhere."""
    return torch.where(s > 0, s.clamp_min(_TINY**2).sqrt(), torch.zeros_like(s))


class PerceptualDistance:
    """LPIPS-style distance computed from the activations of ``network``'s hooked layers.

    The hooked layers' outputs are channel-normalised inside the hook, so a
    later in-place operation in the network cannot corrupt them. The
    network is run in whatever train/eval mode it is in; with BatchNorm in
    train mode the features (and hence d) depend on the whole batch, so
    attacks should use eval mode (the default ``bn_mode``).
    """

    def __init__(self, network: nn.Module, layers: Sequence[nn.Module]) -> None:
        if not layers:
            raise ValueError("a perceptual distance needs at least one layer")
        self.network = network
        self.layers = list(layers)

    @classmethod
    def from_model(cls, model: nn.Module) -> PerceptualDistance:
        """Self-bootstrapped distance from ``model.perceptual_modules()``."""
        # any module with the method (an AdcsModel, ImageNetFeatures); nn.Module alone lacks it
        perceptual_modules: Callable[[], list[nn.Module]] = getattr(model, "perceptual_modules")
        return cls(model, perceptual_modules())

    @contextmanager
    def _capture(self) -> Iterator[list[Tensor]]:
        store: list[Tensor] = []

        def hook(_module: nn.Module, _inputs: object, output: Tensor) -> None:
            store.append(_channel_normalise(output))

        handles = [layer.register_forward_hook(hook) for layer in self.layers]
        try:
            yield store
        finally:
            for handle in handles:
                handle.remove()

    def shares(self, model: nn.Module) -> bool:
        """True when the features come from ``model`` itself (one forward gives both)."""
        return self.network is model

    def output_and_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Runs the network once; returns its output and normalised hooked activations."""
        with self._capture() as store:
            out = self.network(x)
        if len(store) != len(self.layers):
            raise RuntimeError(f"expected {len(self.layers)} hooked activations, got {len(store)}")
        return out, list(store)

    def features(self, x: Tensor) -> list[Tensor]:
        """Normalised activations of the hooked layers for images ``x``."""
        return self.output_and_features(x)[1]

    @staticmethod
    def distance_from_features(fa: Sequence[Tensor], fb: Sequence[Tensor]) -> Tensor:
        """Per-example distance [B] between two feature lists from :meth:`features`."""
        total: Tensor | None = None
        for a, b in zip(fa, fb, strict=True):
            sq = (a - b).pow(2).sum(dim=1)  # over channels -> [B, H, W] or [B]
            per_layer = sq.flatten(1).mean(dim=1) if sq.dim() > 1 else sq
            total = per_layer if total is None else total + per_layer
        assert total is not None  # zip(strict) over at least one layer: __init__ rejects none
        return _safe_sqrt(total)

    def __call__(self, x: Tensor, x2: Tensor) -> Tensor:
        """Per-example perceptual distance d(x, x2), shape [B]."""
        return self.distance_from_features(self.features(x), self.features(x2))

    def to(self, device: torch.device) -> PerceptualDistance:
        """Moves an external feature network to ``device`` (no-op for the model's own)."""
        self.network.to(device)
        return self


def project_perceptual(
    distance: PerceptualDistance,
    x: Tensor,
    x_adv: Tensor,
    epsilon: float,
    *,
    bisection_steps: int = 10,
    features_x: list[Tensor] | None = None,
) -> Tensor:
    """Pulls examples with d(x, x_adv) > eps back along the segment towards x.

    Bisection on ``alpha`` in [0, 1] for ``x + alpha * (x_adv - x)``; the
    returned point is the largest tested one whose distance was measured to
    be <= eps (``alpha = 0``, i.e. x itself, if none was). Examples already
    inside the ball are returned unchanged.

    Args:
        distance: the perceptual distance.
        x: clean images.
        x_adv: candidate adversarial images.
        epsilon: perceptual bound (LPIPS units).
        bisection_steps: number of halvings of the search interval.
        features_x: precomputed ``distance.features(x)``.

    Returns:
        Detached images with d(x, result) <= epsilon (as measured).
    """
    with torch.no_grad():
        fx = features_x if features_x is not None else distance.features(x)
        x, x_adv = x.detach(), x_adv.detach()
        inside = distance.distance_from_features(fx, distance.features(x_adv)) <= epsilon
        shape = (-1,) + (1,) * (x.dim() - 1)
        lo = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        hi = torch.ones_like(lo)
        best = x.clone()
        for _ in range(bisection_steps):
            mid = (lo + hi) / 2
            cand = x + mid.view(shape) * (x_adv - x)
            ok = distance.distance_from_features(fx, distance.features(cand)) <= epsilon
            best = torch.where(ok.view(shape), cand, best)
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        return torch.where(inside.view(shape), x_adv, best)


def _output_and_features(
    model: nn.Module, distance: PerceptualDistance, x: Tensor
) -> tuple[Tensor, list[Tensor]]:
    """Logits of ``model`` and perceptual features, in one forward when they share a network."""
    if distance.shares(model):
        return distance.output_and_features(x)
    return model(x), distance.features(x)


def fast_lpa(
    model: nn.Module,
    x: Tensor,
    loss_fn: AttackLoss,
    distance: PerceptualDistance,
    *,
    epsilon: float,
    steps: int,
    step_size: float | None = None,
    lam: float = 10.0,
    h: float = 0.1,
    init_sigma: float = 0.01,
    bisection_steps: int = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fast Lagrangian perceptual attack (Fast-LPA) with a final bisection projection.

    Args:
        model: maps float [0,1] NCHW images to logits (run in its current mode).
        x: clean images in [0, 1].
        loss_fn: ``(logits_adv, x_adv) -> per-example loss`` to maximise.
        distance: perceptual distance (the model's own features or a backbone).
        epsilon: perceptual bound, LPIPS units.
        steps: number of ascent steps.
        step_size: target change of d per step (LPIPS units) at the first
            step, decayed geometrically to a tenth of it; default ``epsilon``.
        lam: penalty multiplier the schedule grows to (10, the paper's); step t of
            ``steps`` uses ``lam * 0.1 ** (1 - t / steps)``.
        h: finite-difference length (pixel l2 units) for the rate of change of d.
        init_sigma: std of the Gaussian start (keeps d > 0 so its gradient exists).
        bisection_steps: bisection iterations of the final projection.
        generator: RNG for the random start.

    Returns:
        Detached adversarial images in [0, 1] with d(x, x_adv) <= epsilon.
    """
    step_size = epsilon if step_size is None else step_size
    x = x.detach()
    delta = clip_to_box(x, init_sigma * noise_like("randn", x, generator))
    frozen = [model] if distance.shares(model) else [model, distance.network]
    with torch.no_grad():
        features_x = distance.features(x)
    with _all_frozen(frozen), torch.enable_grad():
        for t in range(steps):
            penalty = lam * 0.1 ** (1 - t / steps)
            target = step_size * 0.1 ** (t / steps)
            delta = delta.detach().requires_grad_(True)
            logits, feats = _output_and_features(model, distance, x + delta)
            d = distance.distance_from_features(features_x, feats)
            objective = loss_fn(logits, x + delta) - penalty * F.relu(d - epsilon)
            (grad,) = torch.autograd.grad(objective.sum(), delta)
            direction = grad / (per_example_l2(grad) + 1e-12)
            with torch.no_grad():
                probe = distance.features(x + delta + h * direction)
                feats_now = [f.detach() for f in feats]
                rate = distance.distance_from_features(feats_now, probe) / h
                scale = target / (rate + 1e-4)
                delta = clip_to_box(x, delta.detach() + direction * scale.view(-1, *[1] * (x.dim() - 1)))
    return project_perceptual(
        distance, x, x + delta, epsilon, bisection_steps=bisection_steps, features_x=features_x
    )


@contextmanager
def _all_frozen(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Freezes the parameters of several modules (see ``frozen_parameters``)."""
    if not modules:
        yield
        return
    with frozen_parameters(modules[0]), _all_frozen(modules[1:]):
        yield
