"""Our PGD and our AutoAttack against an independent implementation: foolbox 3's PGD.

Same tiny model, same images, radii where about half the examples survive (so that a weak or
broken attack shows). Foolbox's PGD and ours are two independent codes of the same attack
(50 steps of 2.5·ε/50, random start): their robust accuracies must agree to a few examples.
AutoAttack (published standard version) must be at least as strong as either, up to one
example: an AutoAttack that runs weaker attacks than it names would not be.
"""

from __future__ import annotations

import foolbox as fb
import pytest
import torch
from tiny_models import XYBatch, fit_briefly, make_data, make_model

from distributed_adcs.accuracy import autoattack_accuracy, clean_accuracy, robust_mask

N, CLASSES, STEPS = 48, 4, 50


@pytest.fixture(scope="module")
def fitted():
    model = make_model(0, n_classes=CLASSES)
    x, y = make_data(N, seed=0, n_classes=CLASSES)
    fit_briefly(model, x, y, steps=30)
    return model.eval(), x, y


@pytest.mark.slow  # 5 to 25 s: out of `make test-fast`, in `make test`
@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.25)])
def test_pgd_and_autoattack_against_foolbox(fitted, norm: str, eps: float) -> None:
    model, x, y = fitted
    clean = clean_accuracy(model, [XYBatch(x, y)])
    step = 2.5 * eps / STEPS
    attack = (fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD)(abs_stepsize=step, steps=STEPS,
                                                                          random_start=True)
    torch.manual_seed(0)
    _, _, success = attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=[eps])
    theirs = 1 - success.float().mean().item()
    assert 0.2 < theirs < clean - 0.2, "a radius where the attacks have something to decide"

    ours = robust_mask(model, [XYBatch(x, y)], norm=norm, epsilon=eps, steps=STEPS, step_size=step,
                       generator=torch.Generator().manual_seed(0)).float().mean().item()
    assert abs(ours - theirs) <= 3 / N, (ours, theirs)

    aa = autoattack_accuracy(model, x, y, norm="Linf" if norm == "linf" else "L2", epsilon=eps, n_classes=CLASSES)
    assert aa <= min(ours, theirs) + 1 / N, (aa, ours, theirs)
