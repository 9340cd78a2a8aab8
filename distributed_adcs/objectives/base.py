"""Training-objective base class: inner maximisation plus a per-example outer loss.

Every objective returns one loss per example (shape [B]) so that a weighted
coreset loss ``sum_i w_i * loss_i`` is possible, and exposes the closed-form
derivative of that loss w.r.t. the logits, which the coreset selection uses
to build last-layer gradient embeddings without a backward pass.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distributed_adcs.attacks import AttackLoss, bn_mode
from distributed_adcs.config import ObjectiveConfig
from distributed_adcs.specs.objectives import get_objective


def cross_entropy_attack_loss(y: Tensor) -> AttackLoss:
    """Attack loss ``(logits_adv, x_adv) -> CE(logits_adv, y)`` per example."""

    def loss(logits: Tensor, _x_adv: Tensor) -> Tensor:
        return F.cross_entropy(logits, y, reduction="none")

    return loss


def margin_attack_loss(y: Tensor) -> AttackLoss:
    """Attack loss ``max_{j != y} z_j - z_y`` per example (Carlini-Wagner's margin, untruncated)."""

    def loss(logits: Tensor, _x_adv: Tensor) -> Tensor:
        true = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.masked_fill(F.one_hot(y, num_classes=logits.shape[1]).bool(), float("-inf"))
        return others.amax(dim=1) - true

    return loss


def cross_entropy_logit_grad(logits: Tensor, y: Tensor) -> Tensor:
    """d CE(logits_i, y_i) / d logits_i = softmax(logits_i) - onehot(y_i)."""
    probs = torch.softmax(logits.detach(), dim=1)
    return probs - F.one_hot(y, num_classes=logits.shape[1]).to(probs.dtype)


class ExampleState(Protocol):
    """What an objective with ``uses_ledger`` gets for one batch (``engine.ledger.BatchLedger``)."""

    index: Tensor  # int64 [B] the batch's global example indices
    epoch: int
    scratch: dict[str, Any]  # handed from ``perturb`` to ``update_loss`` for the same batch

    def read(self, name: str) -> Tensor: ...  # the batch's entries, in the batch's (augmented) frame
    def write(self, name: str, values: Tensor) -> None: ...


class Objective:
    """Base objective: cross-entropy on an adversarial example found by ``_inner_max``.

    Subclasses implement ``_inner_max``; TRADES also overrides the loss and its logit
    gradients. What a registered objective must provide: ``distributed_adcs/specs/objectives.py``.

    Attributes:
        spec: the job's objective settings; ``spec.params`` holds the entry's own parameters.
        norm: the ball ``spec.epsilon`` bounds, from the objective's registry entry.
    """

    needs_clean_logits: ClassVar[bool] = False
    # True: the objective keeps per-example state in the job's ledger (engine/ledger.py). The
    # training loop then passes ``state=`` (an :class:`ExampleState`) to ``perturb`` and
    # ``update_loss``, which it never does for the others, so their signatures stay as they are.
    uses_ledger: ClassVar[bool] = False

    def __init__(self, spec: ObjectiveConfig) -> None:
        if spec.epsilon < 0 or spec.steps < 0:
            raise ValueError(f"epsilon and steps must be >= 0, got {spec.epsilon}, {spec.steps}")
        self.spec = spec
        self.norm = get_objective(spec.name).norm

    def prepare_ledger(self, ledger: Any, epoch: int, generator: torch.Generator) -> None:
        """Before each training epoch: declare (or reset) this objective's ledger fields. Called
        on every rank with the same ``generator`` (seeded without the rank). Nothing here."""

    def extra_step_radius(self) -> float:
        """The ball that extra steps from this objective's example project onto
        (``objective.boundary_share``, engine/boundary.py): its own ``epsilon``-ball."""
        return self.spec.epsilon

    def default_step_size(self) -> float:
        """Madry et al.'s rule ``2.5 * epsilon / steps``: enough to cross the ball."""
        return 2.5 * self.spec.epsilon / max(self.spec.steps, 1)

    @property
    def step_size(self) -> float:
        """The attack step size in use (explicit or default)."""
        return self.spec.step_size if self.spec.step_size is not None else self.default_step_size()

    def _inner_max(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        raise NotImplementedError

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Inner maximisation in ``spec.bn_mode``; the model's modes are restored afterwards.

        Args:
            model: classifier on float [0, 1] NCHW images.
            x: clean images.
            y: int64 labels.
            generator: RNG for random starts.

        Returns:
            Detached adversarial images in [0, 1].
        """
        with bn_mode(model, self.spec.bn_mode):
            return self._inner_max(model, x, y, generator)

    def loss_from_logits(self, logits_clean: Tensor | None, logits_adv: Tensor, y: Tensor) -> Tensor:
        """Per-example training loss [B]: here CE on the adversarial logits."""
        return F.cross_entropy(logits_adv, y, reduction="none")

    def logit_grads(
        self, logits_clean: Tensor | None, logits_adv: Tensor, y: Tensor
    ) -> tuple[Tensor | None, Tensor]:
        """Closed-form d loss_i / d logits for the (clean, adversarial) paths.

        Returns:
            ``(None, softmax(logits_adv) - onehot(y))``: CE has no clean path.
        """
        return None, cross_entropy_logit_grad(logits_adv, y)

    def update_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The per-example training loss of an attacked batch, with the model in train mode.

        This is the forward the training loop runs for every update (``engine/epoch.py``).
        When clean logits are needed (TRADES) the clean and adversarial batches go through two
        separate forwards, as in the TRADES reference: each is normalised by its own BatchNorm
        batch statistics. One concatenated forward would normalise both with mixed
        clean+adversarial statistics, a different model (cf. AdvProp's separate BNs); the price
        is that running statistics get two momentum updates per step.

        Args:
            model: classifier (possibly DDP-wrapped); left in train mode on return.
            x: clean images.
            x_adv: their adversarial examples.
            y: int64 labels.

        Returns:
            ``(loss [B] attached to the graph, adversarial logits [B, C])``.
        """
        model.train()
        logits_clean = model(x) if self.needs_clean_logits else None
        logits_adv = model(x_adv)
        return self.loss_from_logits(logits_clean, logits_adv, y), logits_adv

    def with_attack(self, *, steps: int | None = None, step_size: float | None = None) -> Objective:
        """A shallow copy with a different attack budget (e.g. a cheaper selection attack).

        Unset arguments keep the current values; a default (``None``) step
        size stays default and so follows the new number of steps.
        """
        if steps is not None and steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        changes: dict[str, Any] = {k: v for k, v in (("steps", steps), ("step_size", step_size)) if v is not None}
        new = copy.copy(self)
        new.spec = replace(self.spec, **changes)
        return new
