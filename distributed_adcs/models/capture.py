"""Read features out of a model with hooks instead of a flag on ``forward``.

Both context managers remove every hook they add when the block exits, even
when it exits with an exception. Captured tensors are not detached: they stay
on the autograd graph, so callers that only need values should ``.detach()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


class PenultimateFeatures:
    """Holder filled by ``capture_penultimate``; ``features`` is the head's input [B, D]."""

    features: Tensor | None

    def __init__(self) -> None:
        self.features = None


@contextmanager
def capture_penultimate(model: nn.Module) -> Iterator[PenultimateFeatures]:
    """Record the input of ``model.head`` on every forward inside the block.

    Args:
        model: any ``AdcsModel`` (or a module with a ``head`` submodule).

    Returns:
        A context manager yielding a ``PenultimateFeatures`` whose ``features``
        is overwritten by each forward, so ``model.head(holder.features)``
        reproduces the last logits exactly.
    """
    holder = PenultimateFeatures()

    def hook(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
        holder.features = inputs[0]

    head = model.head
    assert isinstance(head, nn.Module)  # a submodule (nn.Module's __getattr__ types it Tensor | Module)
    handle = head.register_forward_pre_hook(hook)
    try:
        yield holder
    finally:
        handle.remove()


@contextmanager
def capture_activations(model: nn.Module, modules: list[nn.Module]) -> Iterator[list[Tensor | None]]:
    """Record the outputs of ``modules`` during each forward of ``model``.

    Args:
        model: the module whose forward is called inside the block.
        modules: submodules of ``model`` to record, e.g. ``model.perceptual_modules()``.

    Returns:
        A context manager yielding a list with one slot per entry of ``modules``,
        in that order. Each forward of ``model`` resets every slot to None, then
        fills it with that module's output (its last call, if it runs twice),
        so the list always describes the most recent forward. Copy it
        (``list(acts)``) before a second forward if both are needed.
    """
    acts: list[Tensor | None] = [None] * len(modules)

    def reset(_module: nn.Module, _inputs: tuple[Any, ...]) -> None:
        acts[:] = [None] * len(modules)

    def recorder(slot: int) -> Callable[[nn.Module, tuple[Any, ...], Tensor], None]:
        def hook(_module: nn.Module, _inputs: tuple[Any, ...], output: Tensor) -> None:
            acts[slot] = output

        return hook

    # The reset hook is registered first on ``model``, so it runs before any
    # recorder even if ``model`` itself is one of ``modules``.
    handles: list[RemovableHandle] = [model.register_forward_pre_hook(reset)]
    try:
        handles += [m.register_forward_hook(recorder(i)) for i, m in enumerate(modules)]
        yield acts
    finally:
        for handle in handles:
            handle.remove()
