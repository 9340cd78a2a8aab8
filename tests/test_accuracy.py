"""Tests for clean, PGD and AutoAttack accuracy."""

from __future__ import annotations

import pytest
import torch
from tiny_models import XYBatch, fit_briefly, make_data, make_model

from distributed_adcs.accuracy import (autoattack_accuracy, autoattack_mask, clean_accuracy, clean_mask,
                                         pack_mask, robust_mask, unpack_mask)

N_CLASSES = 4


@pytest.fixture(scope="module")
def fitted() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny model that fits 48 random images well above chance (about 90%), not robustly."""
    model = make_model(0, n_classes=N_CLASSES)
    x, y = make_data(48, seed=0, n_classes=N_CLASSES)
    fit_briefly(model, x, y, steps=30)
    return model.train(), x, y


def _batches(x: torch.Tensor, y: torch.Tensor, size: int = 16) -> list[XYBatch]:
    return [XYBatch(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def pgd_accuracy(model: torch.nn.Module, batches: list[XYBatch], **kwargs) -> float:
    """Robust accuracy as the jobs compute it: the mean of the robust mask."""
    mask = robust_mask(model, batches, **kwargs)
    assert mask.shape == (sum(len(b.y) for b in batches),) and mask.dtype == torch.bool
    return mask.float().mean().item()


def test_clean_accuracy_counts_and_restores_mode(fitted) -> None:
    model, x, y = fitted
    seen: list[int] = []

    def progress(items):
        for item in items:
            seen.append(1)
            yield item

    acc = clean_accuracy(model, _batches(x, y), progress=progress)
    model.eval()
    with torch.no_grad():
        expected = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    assert acc == pytest.approx(expected)
    assert acc > 0.6  # the fixture really learned something, so robust numbers mean something
    assert len(seen) == 3 and model.training


# Budgets at which this model is partly but not fully robust.
@pytest.mark.parametrize("norm,eps", [("linf", 10 / 255), ("l2", 0.4)])
def test_robust_mask_below_clean_and_restarts_only_lower(fitted, norm: str, eps: float) -> None:
    model, x, y = fitted
    clean = clean_accuracy(model, _batches(x, y))
    accs = [
        pgd_accuracy(model, _batches(x, y), norm=norm, epsilon=eps, steps=5, restarts=r,
                     generator=torch.Generator().manual_seed(0))
        for r in (1, 4)
    ]
    assert accs[0] <= clean
    assert accs[1] <= accs[0]
    assert accs[0] < clean  # the attack does something at this budget
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_robust_mask_zero_budget_equals_clean(fitted) -> None:
    model, x, y = fitted
    clean = clean_accuracy(model, _batches(x, y))
    assert pgd_accuracy(model, _batches(x, y), norm="linf", epsilon=0.0, steps=3) == pytest.approx(clean)


def test_robust_mask_rejects_zero_restarts(fitted) -> None:
    model, x, y = fitted
    with pytest.raises(ValueError):
        pgd_accuracy(model, _batches(x, y), norm="linf", epsilon=0.01, restarts=0)


# Budgets where APGD breaks nearly everything: few survivors keep Square's
# 5000 queries (the slow part of standard AutoAttack) cheap.
@pytest.mark.parametrize("norm,eps", [("Linf", 12 / 255), ("L2", 0.75)])
def test_autoattack_runs_and_is_below_clean(fitted, norm: str, eps: float) -> None:
    model, x, y = fitted
    xs, ys = x[:16], y[:16]
    clean = clean_accuracy(model, [XYBatch(xs, ys)])
    rng_before = torch.get_rng_state()
    acc = autoattack_accuracy(model, xs, ys, norm=norm, epsilon=eps, n_classes=N_CLASSES, batch_size=8)
    assert 0.0 <= acc <= clean
    assert torch.equal(torch.get_rng_state(), rng_before)  # torchattacks' reseeding is contained
    assert all(p.grad is None for p in model.parameters())  # FAB's .backward() is contained
    assert all(p.requires_grad for p in model.parameters())
    assert model.training


@pytest.mark.slow  # 5 to 25 s: out of `make test-fast`, in `make test`
def test_autoattack_standard_runs_the_published_iteration_counts(fitted) -> None:
    # Croce & Hein's standard AutoAttack: 100 iterations each for APGD-CE, APGD-T and FAB-T,
    # then Square with 5,000 queries; torchattacks' own "standard" runs 10 iterations. At a radius nothing
    # breaks, every attack runs to the end, so the forward passes show the iterations run.
    from distributed_adcs.models import PassCounter

    model, x, y = fitted
    xs, ys = x[:4], y[:4]
    counts = {}
    for version in ("standard", "fast"):
        counter = PassCounter(model)
        autoattack_accuracy(model, xs, ys, norm="Linf", epsilon=1e-6, n_classes=N_CLASSES, version=version)
        counter.detach()
        counts[version] = counter.forward
    correct = int(clean_accuracy(model, [XYBatch(xs, ys)]) * 4)
    # 90 more iterations of APGD-CE, and of APGD-T and FAB-T for each target class (9 with 10
    # classes, as published; here N_CLASSES - 1)
    assert counts["standard"] - counts["fast"] >= 90 * correct * (1 + 2 * (N_CLASSES - 1))
    with pytest.raises(ValueError, match="unknown AutoAttack version 'plus'"):
        autoattack_accuracy(model, xs, ys, norm="Linf", epsilon=0.1, n_classes=N_CLASSES, version="plus")


def test_the_configs_square_queries_default_is_the_published_count_autoattack_mask_uses():
    # two places hold it: the config (read without torch) and accuracy.py's default
    from distributed_adcs.accuracy import SQUARE_QUERIES
    from distributed_adcs.config import EvalConfig

    assert EvalConfig().square_queries == SQUARE_QUERIES == 5000


@pytest.mark.slow  # 5 to 25 s: out of `make test-fast`, in `make test`
def test_square_alone_is_the_black_box_check_and_masks_are_per_example(fitted) -> None:
    # Square alone at a radius nothing breaks queries the model without a gradient: no backward
    # pass; at a radius where APGD breaks nearly everything, Square alone breaks fewer (it is
    # one of AutoAttack's four), and every mask is per example and below the clean one
    from distributed_adcs.models import PassCounter

    model, x, y = fitted
    xs, ys = x[:16], y[:16]
    counter = PassCounter(model)
    autoattack_mask(model, xs[:4], ys[:4], norm="Linf", epsilon=1e-6, n_classes=N_CLASSES, version="square")
    counter.detach()
    assert counter.forward > 4 and counter.backward == 0
    fewer = PassCounter(model)  # eval.square_queries reaches Square: a tenth of a percent of the queries
    autoattack_mask(model, xs[:4], ys[:4], norm="Linf", epsilon=1e-6, n_classes=N_CLASSES, version="square",
                    square_queries=5)
    fewer.detach()
    assert 4 < fewer.forward <= 4 * 2 * (5 + 1) and counter.forward > 4 * 1000, (fewer.forward, counter.forward)
    clean = clean_mask(model, [XYBatch(xs[:8], ys[:8]), XYBatch(xs[8:], ys[8:])])
    square = autoattack_mask(model, xs, ys, norm="Linf", epsilon=12 / 255, n_classes=N_CLASSES, version="square")
    full = autoattack_mask(model, xs, ys, norm="Linf", epsilon=12 / 255, n_classes=N_CLASSES, batch_size=8)
    assert clean.shape == square.shape == full.shape == (16,) and clean.dtype == torch.bool
    assert not (square & ~clean).any() and not (full & ~square).any()  # AutoAttack includes Square
    assert autoattack_accuracy(model, xs, ys, norm="Linf", epsilon=12 / 255, n_classes=N_CLASSES,
                               batch_size=8) == int(full.sum()) / 16


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000])
def test_a_packed_mask_reads_back(n: int) -> None:
    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.5
    text = pack_mask(mask)
    assert len(text) == 2 * ((n + 7) // 8)
    assert torch.equal(unpack_mask(text, n), mask)
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_mask(text, n + 8)
