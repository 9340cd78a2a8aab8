"""N-FGSM (objectives/n_fgsm.py): the paper's perturbation, unprojected; its noise; its cost in
passes; its determinism; bn_mode and precision; and a tiny in-process job that trains with it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny_models import make_data, make_model

from distributed_adcs.config import ConfigError, ObjectiveConfig, TrainConfig, load_config
from distributed_adcs.objectives import build_objective
from distributed_adcs.specs.objectives import NFGSMParams

EPS = 0.1


def _n_fgsm(k: float = 2.0, **spec: object) -> object:
    return build_objective(ObjectiveConfig(name="n_fgsm", epsilon=EPS, params=NFGSMParams(noise_mult=k), **spec))


def _by_hand(model, x, y, k: float, alpha: float, seed: int) -> torch.Tensor:
    """The authors' train.py step: eta ~ U(-k eps, k eps) clipped to the image box, the CE gradient
    at x + eta with BN on running statistics (bn_mode eval), delta = eta + alpha sign(grad) clipped
    to the box, and nothing else."""
    m = copy.deepcopy(model).eval()
    eta = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) - 1) * (k * EPS)
    eta = ((x + eta).clamp(0, 1) - x).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(m(x + eta), y, reduction="sum"), eta)
    delta = ((x + eta + alpha * grad.sign()).clamp(0, 1) - x).detach()
    return x + delta


@pytest.mark.parametrize("k, step_size", [(2.0, None), (1.0, 0.05)])
def test_perturbation_is_the_papers_and_is_not_projected(k, step_size):
    model = make_model().eval()
    x, y = make_data(32)
    x[:8] = x[:8].round()  # pixels at 0 and 1: the box clip must act
    obj = _n_fgsm(k, step_size=step_size, steps=7, random_start=False)  # both ignored: one step, always noise
    alpha = EPS if step_size is None else step_size
    assert obj.step_size == pytest.approx(alpha)
    x_adv = obj.perturb(model, x, y, torch.Generator().manual_seed(3))
    torch.testing.assert_close(x_adv, _by_hand(model, x, y, k, alpha, seed=3), rtol=0, atol=1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1  # exactly in the image box
    linf = (x_adv - x).abs()
    assert linf.max() <= k * EPS + alpha + 1e-6
    assert (linf > EPS + 1e-4).float().mean() > 0.2  # well outside the eps-ball: no projection
    assert linf.max() > k * EPS + 0.9 * alpha  # noise and step both reach their ends


@pytest.mark.parametrize("k", [0.0, 0.5, 1.0, 2.0, 4.0])
def test_noise_range_scales_with_k(k):
    model = make_model().eval()
    with torch.no_grad():
        model.head.weight.zero_()  # constant logits: a zero input gradient, so sign(grad) = 0 and x_adv = x + eta
    x = torch.full((64, 3, 8, 8), 0.5)  # 4 eps < 0.5: the box never clips the noise
    y = torch.zeros(64, dtype=torch.int64)
    eta = _n_fgsm(k).perturb(model, x, y, torch.Generator().manual_seed(0)) - x
    if k == 0:
        assert torch.equal(eta, torch.zeros_like(x))
        return
    assert eta.abs().max() <= k * EPS + 1e-6 and eta.abs().max() > 0.99 * k * EPS
    assert eta.abs().mean() == pytest.approx(k * EPS / 2, rel=0.03)  # uniform: E|eta| = k eps / 2
    assert eta.mean().abs() < 0.02 * k * EPS  # symmetric


def test_same_seed_same_x_adv():
    model = make_model().eval()
    x, y = make_data(16)
    obj = _n_fgsm()
    a, b, c = (obj.perturb(model, x, y, torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # the generator decides the noise


def test_bn_mode_is_honoured():
    x, y = make_data(16)
    for mode, moves in (("eval", False), ("train", True)):
        model = make_model().train()
        before = model.block1[1].running_mean.clone()
        _n_fgsm(bn_mode=mode).perturb(model, x, y, torch.Generator().manual_seed(0))
        assert model.training  # restored
        assert torch.equal(model.block1[1].running_mean, before) is not moves, mode


def _passes(name: str, steps: int) -> dict[str, int]:
    from distributed_adcs.data.batches import Batch
    from distributed_adcs.engine.epoch import train_epoch
    from distributed_adcs.engine.schedule import EpochSchedule
    from distributed_adcs.models import PassCounter

    model = make_model()
    obj = build_objective(ObjectiveConfig(name=name, epsilon=EPS, steps=steps))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = []
    for seed in (0, 1):
        x, y = make_data(8, seed=seed)
        batches.append(Batch(x=x, y=y, index=torch.arange(8), position=torch.arange(8), weight=torch.ones(8)))
    counter = PassCounter(model)
    train_epoch(model, obj, batches, opt, EpochSchedule(opt, TrainConfig(schedule="constant", lr=0.01)), 0, 2,
                generator=torch.Generator().manual_seed(0))
    return counter.state()


def test_one_attack_forward_and_backward_per_batch():
    # 16 examples: the attack's forward and input-gradient backward, then the update's
    two_units = {"passes_forward": 32, "passes_backward": 32}
    assert _passes("n_fgsm", steps=10) == two_units  # objective.steps is ignored
    assert _passes("fgsm_rs", steps=10) == two_units
    assert _passes("pgd_linf", steps=3) == {"passes_forward": 64, "passes_backward": 64}  # the counter tells them apart


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_runs_under_autocast(precision):
    from distributed_adcs.models import build_model, set_precision

    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28, mean=[0.3], std=[0.3]).eval()
    set_precision(model, precision, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)
    x_adv = _n_fgsm().perturb(model, x, y, torch.Generator().manual_seed(0))
    assert x_adv.dtype == torch.float32 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 2 * EPS  # noise and a real (non-zero) signed step


def test_config_reads_and_checks_noise_mult():
    cfg = load_config(None, ["objective.name=n_fgsm", "objective.params.noise_mult=1"])
    assert cfg.objective.params == NFGSMParams(noise_mult=1.0)
    assert load_config(None, ["objective.name=n_fgsm"]).objective.params.noise_mult == 2.0  # the paper's k
    with pytest.raises(ConfigError, match=r"^objective\.params\.noise_mult: must be >= 0"):
        load_config(None, ["objective.name=n_fgsm", "objective.params.noise_mult=-1"])


def test_tiny_job_trains_with_n_fgsm():
    from helpers import TINY

    from distributed_adcs.engine.build import load_job_splits
    from distributed_adcs.engine.job import Job

    cfg = load_config("configs/quickstart.yaml", [*TINY, "train.epochs=1", "objective.name=n_fgsm"])
    job = Job(cfg, load_job_splits(cfg), torch.device("cpu"))
    metrics = job.run_epoch(0)[0]
    n = metrics["train_examples"]
    assert n == 384 and torch.isfinite(torch.tensor(metrics["train_loss"]))
    # an N-FGSM epoch costs 2 units per example (attack + update), PGD-2's would cost 3
    assert (metrics["passes_forward"], metrics["passes_backward"]) == (2 * n, 2 * n)
    val = job.validate(0)
    assert 0.0 <= val["val_robust_acc"] <= val["val_clean_acc"] <= 1.0
