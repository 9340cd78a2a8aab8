"""Per-example gradient embeddings of the adversarial loss, in closed form.

For an example with logits ``z`` (clean path ``z_c``, adversarial path ``z_a``) and
penultimate features ``h`` (the input of the model's last linear layer ``head``), the
gradient of its training loss w.r.t. the head is

    d loss / d bias   = g_a + g_c                      (g = d loss / d logits, per path)
    d loss / d weight = g_a h_a^T + g_c h_c^T

where ``g`` comes from ``objective.logit_grads`` (closed form: softmax minus one-hot for
cross-entropy; TRADES adds beta times the KL term through both paths). No backward pass
through the network is needed, which is what makes selection cheap. Kinds:

* ``logits``: the bias gradient, ``C`` numbers per example (the default).
* ``last_layer``: bias gradient followed by the flattened weight gradient, ``C + C*D``.
* ``last_layer_class``: bias gradient followed by the weight-gradient row of the example's own
  class, ``C + D``: the per-class slice for per-class selection, where every example in a
  group shares that class.

Embeddings are taken with the model in eval mode, so an example's embedding does not depend
on which other examples share its batch (selection is then identical for any sharding). The
adversarial example is generated on exactly the (augmented) view ``x`` whose gradient is taken.
"""

from __future__ import annotations

from typing import Callable

import torch

from .attacks import bn_mode
from .models import capture_penultimate

EMBEDDING_KINDS = ("logits", "last_layer", "last_layer_class")


def embedding_dim(kind: str, num_classes: int, features: int) -> int:
    """Floats per example of an embedding ``kind`` (C classes, D penultimate features)."""
    dims = {"logits": num_classes, "last_layer": num_classes + num_classes * features,
            "last_layer_class": num_classes + features}
    if kind not in dims:
        raise ValueError(f"unknown embedding kind {kind!r}; valid: {', '.join(EMBEDDING_KINDS)}")
    return dims[kind]


def _head_grads(g: torch.Tensor, h: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "last_layer":
        return torch.einsum("bc,bd->bcd", g, h).flatten(1)
    return g.gather(1, y[:, None]) * h  # row y of g h^T


def embed_from_logits(objective, y: torch.Tensor, z_adv: torch.Tensor, h_adv: torch.Tensor,
                      z_clean: torch.Tensor | None = None, h_clean: torch.Tensor | None = None,
                      kind: str = "logits") -> torch.Tensor:
    """Closed-form head gradient of ``objective``'s per-example loss (see module docstring)."""
    if kind not in EMBEDDING_KINDS:
        raise ValueError(f"unknown embedding kind {kind!r}; valid: {', '.join(EMBEDDING_KINDS)}")
    g_clean, g_adv = objective.logit_grads(z_clean, z_adv, y)
    bias = g_adv if g_clean is None else g_adv + g_clean
    if kind == "logits":
        return bias
    weight = _head_grads(g_adv, h_adv, y, kind)
    if g_clean is not None:
        assert h_clean is not None  # the clean logits' loss term needs the clean features too
        weight = weight + _head_grads(g_clean, h_clean, y, kind)
    return torch.cat([bias, weight], dim=1)


@torch.no_grad()
def _forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with capture_penultimate(model) as cap:
        z = model(x)
    assert cap.features is not None  # the forward ran the head
    return z.float(), cap.features.flatten(1).float()


def embed_batch(model: torch.nn.Module, objective, x: torch.Tensor, y: torch.Tensor, *, kind: str = "logits",
                generator: torch.Generator | None = None,
                clock: Callable[[str, float], None] | None = None) -> torch.Tensor:
    """Attack ``x`` with ``objective`` and return the per-example embeddings ``[B, E]``.

    Args:
        model: an ``AdcsModel`` (bare, not DDP-wrapped).
        objective: the selection objective (usually a cheaper attack than training's).
        x: the augmented view, float in [0, 1]; attacked and embedded as is.
        clock: optional ``clock(phase, seconds)`` sink for the ``attack`` and ``embed`` times.
    """
    import time

    t0 = time.perf_counter()
    x_adv = objective.perturb(model, x, y, generator=generator)
    t1 = time.perf_counter()
    with bn_mode(model, "eval"):
        z_adv, h_adv = _forward(model, x_adv)
        z_clean = h_clean = None
        if objective.needs_clean_logits:
            z_clean, h_clean = _forward(model, x)
        emb = embed_from_logits(objective, y, z_adv, h_adv, z_clean, h_clean, kind)
    if clock is not None:
        clock("attack", t1 - t0)
        clock("embed", time.perf_counter() - t1)
    return emb
