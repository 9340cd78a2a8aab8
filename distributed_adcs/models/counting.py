"""Counting passes through a model: examples forward and examples backward.

A machine-independent measure of cost: every attack step, update, selection pass and
evaluation is one forward (and, where gradients flow, one backward) of its batch. Unlike wall
time, no other load on the machine changes it.
"""

from __future__ import annotations

import torch
from torch import nn


class PassCounter:
    """Counts ``forward`` (examples through ``model``) and ``backward`` (examples whose gradient
    flowed back through it) from the moment it is attached."""

    def __init__(self, model: nn.Module):
        self.forward = 0
        self.backward = 0
        self._handle = model.register_forward_hook(self._on_forward)

    def _on_forward(self, module: nn.Module, inputs, output) -> None:
        n = int(output.shape[0]) if isinstance(output, torch.Tensor) and output.dim() else 0
        self.forward += n
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(self._on_backward)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward += int(grad.shape[0])

    def detach(self) -> None:
        self._handle.remove()

    def state(self) -> dict[str, int]:
        return {"passes_forward": self.forward, "passes_backward": self.backward}
