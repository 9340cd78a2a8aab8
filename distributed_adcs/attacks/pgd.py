"""The single projected-gradient attack loop used for every norm, plus model-state guards.

``attack`` maximises a per-example loss over a norm ball (see
:mod:`distributed_adcs.attacks.geometry`) and never touches the model's
parameter gradients: it differentiates with ``torch.autograd.grad`` with
respect to the perturbation only, with the parameters temporarily frozen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from distributed_adcs.attacks.geometry import Geometry, resolve_geometry

# loss_fn(logits_adv, x_adv) -> per-example loss [B]; the attack maximises its sum.
AttackLoss = Callable[[Tensor, Tensor], Tensor]

# bn_mode name -> value passed to nn.Module.train().
_BN_MODES: dict[str, bool] = {"eval": False, "train": True}


@contextmanager
def bn_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Puts ``model`` in eval or train mode for the duration of an attack.

    ``"eval"``: BatchNorm uses its running statistics and leaves them
    untouched, so an example's adversarial perturbation does not depend on the
    other examples in the batch. ``"train"``: BatchNorm uses batch statistics
    and *does* update its running statistics on every attack forward.

    On exit every submodule's previous ``training`` flag is restored
    individually (not just the root's), so mixed states such as frozen BN
    layers inside a training model survive.

    Args:
        model: the network attacked.
        mode: ``"eval"`` or ``"train"``.

    Yields:
        The model, in the requested mode.

    Raises:
        ValueError: for an unknown mode.
    """
    if mode not in _BN_MODES:
        raise ValueError(f"unknown bn_mode {mode!r}; known: {sorted(_BN_MODES)}")
    previous = [(module, module.training) for module in model.modules()]
    model.train(_BN_MODES[mode])
    try:
        yield model
    finally:
        for module, was_training in previous:
            module.training = was_training


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Sets ``requires_grad=False`` on all parameters, restoring each flag on exit.

    Backward passes inside then cannot write parameter ``.grad`` and autograd
    skips the weight-gradient kernels.
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def clip_to_box(x: Tensor, delta: Tensor) -> Tensor:
    """Shrinks ``delta`` so ``x + delta`` lies in [0, 1].

    Because x is in [0, 1] this only moves coordinates of delta towards 0, so
    any l_p norm bound that held before still holds.
    """
    return (x + delta).clamp(0.0, 1.0) - x


def attack(
    model: nn.Module,
    x: Tensor,
    loss_fn: AttackLoss,
    *,
    geometry: str | Geometry,
    epsilon: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient ascent on ``loss_fn(model(x + delta), x + delta).sum()``.

    The model is run in whatever mode it is in (wrap the call in
    :func:`bn_mode` to choose). Each step: gradient w.r.t. delta, geometry
    step, projection onto the eps-ball, clamp of ``x + delta`` to [0, 1].
    ``steps=0`` returns the (box-clamped) random start, or ``x`` itself
    without random start.

    Args:
        model: maps float [0,1] NCHW images to logits.
        x: clean images in [0, 1], NCHW.
        loss_fn: ``(logits_adv, x_adv) -> per-example loss [B]`` to maximise.
        geometry: ``"linf"``, ``"l2"`` or a :class:`Geometry` instance.
        epsilon: radius of the ball, in pixel units of the chosen norm.
        step_size: size of each ascent step, same units.
        steps: number of gradient steps.
        random_start: start from ``geometry.random_init`` instead of ``x``.
        generator: RNG for the random start (its device may differ from x's).

    Returns:
        Detached adversarial images ``x_adv`` with ``||x_adv - x|| <= epsilon``
        and values in [0, 1].
    """
    geo = resolve_geometry(geometry)
    x = x.detach()
    if random_start:
        delta = geo.random_init(x, epsilon, generator)
    else:
        delta = torch.zeros_like(x)
    delta = clip_to_box(x, delta)
    with frozen_parameters(model), torch.enable_grad():
        for _ in range(steps):
            delta = delta.detach().requires_grad_(True)
            x_adv = x + delta
            loss = loss_fn(model(x_adv), x_adv).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            delta = geo.project(geo.step(delta.detach(), grad, step_size), epsilon)
            delta = clip_to_box(x, delta)
    return (x + delta).detach()
