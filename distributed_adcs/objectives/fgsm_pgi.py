"""FGSM-PGI (Jia et al., ECCV 2022, "Prior-Guided Adversarial Initialization for Fast Adversarial
Training"): one FGSM step from a per-example prior perturbation that is kept across epochs.

Read for the facts in the authors' ``FGSM_MEP.py`` (jiaxiaojunQAQ/FGSM-PGI), then written here:

- state per example: a prior ``p`` and a momentum ``m``; ``p`` starts at ``eps * sign(U(-eps, eps))``
  (a random sign times ``eps``), ``m`` at 0, and both are reset every ``reset_every`` epochs
  (theirs: 40 of 110);
- ``g = grad_x`` of the label-smoothed CE at ``x + p`` (true class 0.6, the rest spread evenly);
- ``delta = clip(p + alpha sign(g))`` into the eps-ball and the image box, ``alpha = eps``;
- ``m <- g / ||g||_1 + mu m`` (``mu = 0.3``), ``p <- clip(p + alpha sign(m))``: the next prior;
- loss: label-smoothed CE at ``x + delta`` plus ``lam * MSE(f(x + delta), f(x + p))`` (``lam = 10``),
  back-propagated through both outputs, ``p`` being the prior the step started from.

Where this differs from their code, and why:

- ``||g||_1`` is each example's own; theirs is the whole batch's. Per example, an example's state
  does not depend on which batch (or DDP rank) it was drawn into.
- ``f(x + p)`` in the loss is its own forward in train mode, in the update; theirs reuses the
  attack's forward graph. The attack here runs on the bare model in ``spec.bn_mode`` (under DDP
  an attack pass must not be a DDP forward), so reusing it is not possible: one forward more
  per example (3 forwards and 3 backwards per example, theirs 2 and 3). The pass counters count it.
- ``x + p`` is clipped to the image box before use (their initial prior is not).
- With random crops and flips the prior and the momentum follow the image they belong to
  (engine/ledger.py keeps them in the un-augmented frame); theirs stay in the crop's frame.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distributed_adcs.attacks import bn_mode
from distributed_adcs.config import ObjectiveConfig
from distributed_adcs.objectives.base import ExampleState, Objective

PRIOR, MOMENTUM = "fgsm_pgi_prior", "fgsm_pgi_momentum"  # ledger fields, image-shaped


def smoothed_targets(y: Tensor, classes: int, true_prob: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """``true_prob`` on the true class, ``(1 - true_prob) / (classes - 1)`` on each other one."""
    rest = (1.0 - true_prob) / max(classes - 1, 1)
    return torch.full((y.shape[0], classes), rest, device=y.device, dtype=dtype).scatter_(1, y[:, None], true_prob)


def random_sign(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """+-1 with probability 1/2 each: ``sign(U(-eps, eps))``, drawn on the generator's device."""
    draw = generator.device if generator is not None else torch.device("cpu")
    bits = torch.randint(0, 2, shape, generator=generator, device=draw, dtype=torch.int8)
    return bits.to(device=device, dtype=torch.float32).mul_(2).sub_(1)


class FGSMPGI(Objective):
    """Label-smoothed CE at ``x + delta`` (+ ``lam`` MSE to the prior's outputs), ``delta`` one
    signed step of ``alpha`` (``spec.step_size``, default ``epsilon``) from the example's prior.

    Parameters: ``spec.params`` (``FGSMPGIParams``). Always one gradient step: ``spec.steps`` and
    ``spec.random_start`` are ignored. Without a ledger (``state=None``: a selection's attack)
    the step starts from a fresh random prior, drawn from ``generator``, and nothing is kept.
    """

    uses_ledger = True

    def __init__(self, spec: ObjectiveConfig) -> None:
        super().__init__(spec)
        if self.norm != "linf":
            raise ValueError(f"FGSM-PGI attacks in l-inf; its registry entry says {self.norm}")
        self.params = spec.params

    def default_step_size(self) -> float:
        """``alpha = epsilon`` (the authors' ``--alpha 8`` with ``--epsilon 8``)."""
        return self.spec.epsilon

    def prepare_ledger(self, ledger: Any, epoch: int, generator: torch.Generator) -> None:
        """A fresh prior and a zero momentum at epoch 0 and every ``reset_every`` epochs after."""
        if ledger.has(PRIOR) and epoch % self.params.reset_every:
            return
        shape = (len(ledger), *ledger.example_shape)
        ledger.reset(PRIOR, self.spec.epsilon * random_sign(shape, generator, torch.device("cpu")))
        ledger.reset(MOMENTUM, torch.zeros(shape))

    def _project(self, delta: Tensor, x: Tensor) -> Tensor:
        eps = self.spec.epsilon
        return torch.minimum(torch.maximum(delta.clamp(-eps, eps), -x), 1 - x)

    def loss_from_logits(self, logits_clean: Tensor | None, logits_adv: Tensor, y: Tensor) -> Tensor:
        """Label-smoothed CE per example (the consistency term is added in :meth:`update_loss`)."""
        log_probs = F.log_softmax(logits_adv, dim=1)  # float32 under autocast
        target = smoothed_targets(y, logits_adv.shape[1], self.params.true_class_prob, log_probs.dtype)
        return -(target * log_probs).sum(1)

    def logit_grads(self, logits_clean: Tensor | None, logits_adv: Tensor, y: Tensor) -> tuple[None, Tensor]:
        """``softmax(logits_adv) - target``: the smoothed CE's gradient."""
        probs = torch.softmax(logits_adv.detach(), dim=1)
        return None, probs - smoothed_targets(y, logits_adv.shape[1], self.params.true_class_prob, probs.dtype)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None,
                state: ExampleState | None = None) -> Tensor:
        """The FGSM step from the prior; with ``state``, also the next prior and momentum."""
        alpha = self.step_size
        if state is None:
            prior = self.spec.epsilon * random_sign(tuple(x.shape), generator, x.device)
        else:
            prior = state.read(PRIOR)
        prior = (x + prior).clamp(0, 1) - x
        with bn_mode(model, self.spec.bn_mode):
            delta = prior.clone().requires_grad_(True)
            loss = self.loss_from_logits(None, model(x + delta), y).sum()  # per-example gradients
            (grad,) = torch.autograd.grad(loss, delta)
        x_adv = (x + self._project(prior + alpha * grad.sign(), x)).detach()
        if state is not None:
            l1 = grad.abs().flatten(1).sum(1).clamp_min(torch.finfo(grad.dtype).tiny)
            momentum = grad / l1.view(-1, *([1] * (x.dim() - 1))) + self.params.momentum_decay * state.read(MOMENTUM)
            state.write(MOMENTUM, momentum)
            state.write(PRIOR, self._project(prior + alpha * momentum.sign(), x))
            state.scratch["x_prior"] = (x + prior).detach()  # the consistency term's other input
        return x_adv

    def update_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor,
                    state: ExampleState | None = None) -> tuple[Tensor, Tensor]:
        """Smoothed CE at ``x_adv`` plus ``lam * mean_c (f(x_adv) - f(x + prior))^2`` per example
        (the authors' batch-mean MSE, split per example), back-propagated through both forwards.
        Without ``state`` (no prior), or with ``consistency`` off, the CE alone."""
        model.train()
        x_prior = None if state is None else state.scratch.pop("x_prior", None)
        if x_prior is None or not self.params.consistency or self.params.lam == 0:
            logits_adv = model(x_adv)
            return self.loss_from_logits(None, logits_adv, y), logits_adv
        logits_prior = model(x_prior)  # first, as in theirs (the prior's forward precedes the step's)
        logits_adv = model(x_adv)
        mse = (logits_adv.float() - logits_prior.float()).pow(2).mean(1)
        return self.loss_from_logits(None, logits_adv, y) + self.params.lam * mse, logits_adv
