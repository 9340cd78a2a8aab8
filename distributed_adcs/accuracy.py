"""Clean and robust accuracy of a classifier on float [0, 1] NCHW images.

All functions run the model in eval mode (restoring every submodule's mode
afterwards), move each batch to the model's device, and count an example as
robust only if it is also classified correctly when clean, so robust
accuracy can never exceed clean accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distributed_adcs.attacks import attack, bn_mode, frozen_parameters

T = TypeVar("T")
# Optional iterable wrapper for progress display, e.g. ``tqdm.tqdm``.
Progress = Callable[[Iterable[Any]], Iterable[Any]]


class HasXY(Protocol):
    """Anything with images ``x`` (float [0,1] NCHW) and labels ``y`` (int64)."""

    @property
    def x(self) -> Tensor: ...

    @property
    def y(self) -> Tensor: ...


def _wrap(items: Iterable[T], progress: Progress | None) -> Iterable[T]:
    return progress(items) if progress is not None else items


def _model_device(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _ratio(correct: int, total: int) -> float:
    if total == 0:
        raise ValueError("no examples to evaluate")
    return correct / total


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Boolean [B]: prediction equals label."""
    return model(x).argmax(dim=1) == y


def clean_accuracy(
    model: nn.Module, batches: Iterable[HasXY], *, progress: Progress | None = None
) -> float:
    """Fraction of examples classified correctly.

    Args:
        model: classifier on float [0, 1] NCHW images.
        batches: iterable of objects with ``.x`` and ``.y``.
        progress: optional iterable wrapper for a progress bar.

    Returns:
        Accuracy in [0, 1].
    """
    mask = clean_mask(model, batches, progress=progress)
    return _ratio(int(mask.sum()), mask.numel())


@torch.no_grad()
def clean_mask(model: nn.Module, batches: Iterable[HasXY], *, progress: Progress | None = None) -> Tensor:
    """Per example, in batch order (on the CPU): classified correctly."""
    device = _model_device(model)
    masks = []
    with bn_mode(model, "eval"):
        for batch in _wrap(batches, progress):
            masks.append(_correct(model, batch.x.to(device), batch.y.to(device)).cpu())
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)


def pack_mask(mask: Tensor) -> str:
    """A boolean mask as hex text, 8 examples a byte, the first example in the high bit
    (``numpy.packbits``); :func:`unpack_mask` reads it back."""
    import numpy as np

    return np.packbits(mask.detach().cpu().numpy().astype(bool)).tobytes().hex()


def unpack_mask(text: str, n: int) -> Tensor:
    """The first ``n`` entries of a mask written by :func:`pack_mask`."""
    import numpy as np

    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))
    if bits.size < n:
        raise ValueError(f"a packed mask of {bits.size} bits cannot hold {n} examples")
    return torch.from_numpy(bits[:n].astype(bool))


def _robust_mask(
    model: nn.Module, x: Tensor, y: Tensor, *, restarts: int, **attack_kwargs: Any
) -> Tensor:
    """Boolean [B]: correct when clean and after every PGD restart (worst case).

    Each restart attacks only the examples that are still robust.
    """
    alive = _correct(model, x, y)
    for _ in range(restarts):
        idx = alive.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xi, yi = x[idx], y[idx]

        def ce(logits: Tensor, _x_adv: Tensor, yi: Tensor = yi) -> Tensor:
            return F.cross_entropy(logits, yi, reduction="none")

        x_adv = attack(model, xi, ce, random_start=True, **attack_kwargs)
        alive[idx[~_correct(model, x_adv, yi)]] = False
    return alive


def robust_mask(
    model: nn.Module,
    batches: Iterable[HasXY],
    *,
    norm: str,
    epsilon: float,
    steps: int = 20,
    step_size: float | None = None,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> Tensor:
    """Per example, in batch order: correct when clean and under untargeted cross-entropy PGD,
    worst case over random restarts.

    Args:
        model: classifier on float [0, 1] NCHW images.
        batches: iterable of objects with ``.x`` and ``.y``.
        norm: ``"linf"`` or ``"l2"``.
        epsilon: radius in pixel units.
        steps: PGD iterations per restart.
        step_size: default ``2.5 * epsilon / steps``.
        restarts: random restarts; an example counts only if it survives all.
        generator: RNG for the random starts.
        progress: optional iterable wrapper for a progress bar.

    Returns:
        A boolean tensor with one entry per example.
    """
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    step_size = 2.5 * epsilon / max(steps, 1) if step_size is None else step_size
    device = _model_device(model)
    masks = []
    with bn_mode(model, "eval"):
        for batch in _wrap(batches, progress):
            x, y = batch.x.to(device), batch.y.to(device)
            masks.append(_robust_mask(
                model, x, y, restarts=restarts, geometry=norm, epsilon=epsilon,
                step_size=step_size, steps=steps, generator=generator,
            ))
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)


AUTOATTACK_STEPS = {"standard": 100, "fast": 10}  # APGD-CE, APGD-T and FAB-T iterations
# the versions autoattack_mask runs: the two AutoAttacks, and Square alone (black box)
AUTOATTACK_VERSIONS = (*AUTOATTACK_STEPS, "square")
SQUARE_QUERIES = 5000  # Square's queries by default in every version (the published standard's)


def autoattack_mask(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    epsilon: float,
    n_classes: int,
    seed: int = 0,
    batch_size: int = 256,
    progress: Progress | None = None,
    version: str = "standard",
    square_queries: int = SQUARE_QUERIES,
) -> Tensor:
    """Per example, in order: correct when clean and under AutoAttack (APGD-CE, APGD-T, FAB-T,
    then Square), built from torchattacks' components with the iteration counts of ``version``
    (:data:`AUTOATTACK_STEPS`); ``version="square"`` runs Square alone, the black-box check for
    gradient masking.

    ``standard`` is Croce & Hein's published standard version: 100 iterations for APGD-CE,
    APGD-T (9 target classes) and FAB-T (9 targets), 1 restart each, then Square with 5,000
    queries. torchattacks' own ``AutoAttack(version="standard")`` builds the same attacks with
    their default 10 iterations, a weaker attack: that one is ``fast`` here, and is reported
    under its own name, never as AutoAttack.

    Checked with torchattacks 3.3.0 on torch 2.14: it runs unchanged. Two
    side effects of torchattacks are contained here: its APGD re-seeds the
    *global* torch RNG (so the caller's RNG state is saved and restored), and
    its FAB calls ``.backward()``, which would write parameter ``.grad``
    (so parameters are frozen during the attack).

    Args:
        model: classifier on float [0, 1] NCHW images.
        x: images (the caller chooses which/how many, e.g. the first n).
        y: int64 labels.
        norm: ``"Linf"`` or ``"L2"`` (torchattacks' spelling).
        epsilon: radius in pixel units.
        n_classes: number of classes of the model's output.
        seed: torchattacks' seed for its random starts.
        batch_size: examples attacked at once.
        progress: optional iterable wrapper for a progress bar.
        version: ``standard``, ``fast`` or ``square``.
        square_queries: Square's queries (5,000 as published; fewer is a weaker check).

    Returns:
        A boolean tensor with one entry per example (on the CPU).
    """
    import torchattacks  # heavy import, only needed here

    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r}; valid: {', '.join(AUTOATTACK_VERSIONS)}")
    if x.shape[0] == 0:
        raise ValueError("no examples to evaluate")
    device = _model_device(model)
    rng_devices = [torch.cuda.current_device()] if device.type == "cuda" else []
    masks = []
    with bn_mode(model, "eval"), frozen_parameters(model), torch.random.fork_rng(devices=rng_devices):
        common = {"norm": norm, "eps": epsilon, "seed": seed, "n_restarts": 1}
        square = torchattacks.Square(model, n_queries=square_queries, **common)
        if version == "square":  # (MultiAttack wants two or more)
            aa = square
        else:
            steps = AUTOATTACK_STEPS[version]
            aa = torchattacks.MultiAttack([
                torchattacks.APGD(model, steps=steps, loss="ce", **common),
                torchattacks.APGDT(model, steps=steps, n_classes=n_classes, **common),
                torchattacks.FAB(model, steps=steps, multi_targeted=True, n_classes=n_classes, **common),
                square,
            ])
        for start in _wrap(range(0, x.shape[0], batch_size), progress):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            x_adv = aa(xb, yb)
            masks.append((_correct(model, xb, yb) & _correct(model, x_adv, yb)).cpu())
    return torch.cat(masks)


def autoattack_accuracy(model: nn.Module, x: Tensor, y: Tensor, **kwargs: Any) -> float:
    """Robust accuracy in [0, 1] under :func:`autoattack_mask` (same arguments)."""
    mask = autoattack_mask(model, x, y, **kwargs)
    return _ratio(int(mask.sum()), mask.numel())
