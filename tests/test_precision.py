"""train.precision: the forwards of training, attacks and evaluation run under autocast (one
place: AdcsModel.forward); on the CPU bf16 and fp16 give finite losses and, on the same run,
accuracy within noise of fp32."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import TINY

from distributed_adcs.config import load_config
from distributed_adcs.engine.build import load_job_splits
from distributed_adcs.engine.job import Job
from distributed_adcs.models import build_model, set_precision


def _dtypes(model, x):
    seen = []
    hook = model.head.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].dtype))
    try:
        out = model(x)
    finally:
        hook.remove()
    return seen[0], out


@pytest.mark.parametrize("precision, inner", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_forward_runs_in_the_precision_and_returns_float32_logits(precision, inner):
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28, mean=[0.3], std=[0.3])
    set_precision(model, precision, torch.device("cpu"), channels_last=True)
    assert not model.channels_last  # NHWC only on CUDA
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    features, logits = _dtypes(model, x)
    assert features == inner and logits.dtype == torch.float32
    logits.sum().backward()  # an attack's input gradient flows through autocast
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_unknown_precision_is_refused():
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28, mean=[0.3], std=[0.3])
    with pytest.raises(ValueError, match="unknown precision"):
        set_precision(model, "fp8", torch.device("cpu"))


def _train(precision: str) -> dict[str, float]:
    cfg = load_config("configs/quickstart.yaml", [*TINY, "train.epochs=3", "data.limit=768", "data.val_size=256",
                                                   f"train.precision={precision}", "eval.val_pgd_steps=3"])
    job = Job(cfg, load_job_splits(cfg), torch.device("cpu"))
    losses = [job.run_epoch(e)[0]["train_loss"] for e in range(3)]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    if precision == "fp16":
        assert job.scaler is not None and job.scaler.get_scale() > 0
    return {"loss": losses[-1], **job.validate(2)}


def test_bf16_and_fp16_train_to_finite_losses_and_fp32_accuracy():
    ref = _train("fp32")
    for precision in ("bf16", "fp16"):
        got = _train(precision)
        assert abs(got["val_clean_acc"] - ref["val_clean_acc"]) <= 0.06, (precision, got, ref)
        assert abs(got["val_robust_acc"] - ref["val_robust_acc"]) <= 0.06, (precision, got, ref)


def test_fp16_resume_continues_with_the_loss_scale_it_had():
    """The gradient scaler's state is in the checkpoint: without it a resumed fp16 job starts
    again at 2**16, skips steps while it backs off, and trains differently from an uninterrupted one."""
    cfg = load_config("configs/quickstart.yaml", [*TINY, "train.epochs=2", "train.precision=fp16", "deterministic=true"])
    splits = load_job_splits(cfg)
    job = Job(cfg, splits, torch.device("cpu"))
    job.run_epoch(0)
    job.scaler.update(new_scale=512.0)  # a scale it could have backed off to (these tiny runs seldom overflow)
    saved = copy.deepcopy(job.payload())  # what a checkpoint file holds (state_dict tensors are live views)
    uninterrupted = job.run_epoch(1)[0]
    resumed = Job(cfg, splits, torch.device("cpu"))
    resumed.restore(saved)
    assert resumed.scaler.get_scale() == 512.0
    again = resumed.run_epoch(1)[0]
    assert again["train_loss"] == uninterrupted["train_loss"]
    assert torch.equal(torch.nn.utils.parameters_to_vector(resumed.model.parameters()),
                       torch.nn.utils.parameters_to_vector(job.model.parameters()))
