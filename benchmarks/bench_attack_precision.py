"""How strong PGD is when its forwards run under fp16 or bf16 autocast, against fp32 (the baseline).

    .venv/bin/python benchmarks/bench_attack_precision.py [--limit 4000] [--epochs 4] [--eval 500]

An fp16 attack differentiates a loss that is not scaled (only the weight update has a gradient
scaler), so small input gradients could underflow to 0 and their pixels would not move. This
trains small_cnn adversarially for a few epochs (fp32), then attacks the same validation images
with PGD-10 (l-inf 0.1) whose forwards run in fp32, fp16 and bf16, and scores every attack with
the same fp32 model: the fraction of exactly-zero input-gradient entries at the clean point, and
the robust accuracy each attack leaves (lower: stronger). Runs on the CPU (autocast on the CPU
takes both half types); on a GPU the half kernels differ, so this is the CPU's answer.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from distributed_adcs.attacks.pgd import attack
from distributed_adcs.config import load_config
from distributed_adcs.engine.build import load_job_splits
from distributed_adcs.engine.job import Job
from distributed_adcs.models import set_precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=4000, help="training images")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--eval", type=int, default=500, help="validation images attacked")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config("configs/quickstart.yaml", [f"data.limit={args.limit}", f"data.val_size={args.eval}",
                                                  f"train.epochs={args.epochs}", "coreset.method=full",
                                                  "ray.num_workers=0", "ray.num_actors=0", "objective.steps=3"])
    splits = load_job_splits(cfg, evaluates=False)
    device = torch.device("cpu")
    job = Job(cfg, splits, device)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        job.run_epoch(epoch)
    print(f"trained {args.epochs} epochs on {args.limit} images in {time.perf_counter() - t0:.0f} s")
    model = job.model.eval()
    x, y = splits.val.float_images(), splits.val.labels

    def loss(logits, _x):
        return F.cross_entropy(logits.float(), y, reduction="none")

    print("| attack forwards | zero input-gradient entries | robust accuracy (fp32 model) |")
    print("| --- | --- | --- |")
    for precision in ("fp32", "fp16", "bf16"):
        set_precision(model, precision, device)
        delta = torch.zeros_like(x, requires_grad=True)
        (grad,) = torch.autograd.grad(loss(model(x + delta), None).sum(), delta)
        x_adv = attack(model, x, loss, geometry="linf", epsilon=0.1, step_size=0.025, steps=10,
                       generator=torch.Generator().manual_seed(1))
        set_precision(model, "fp32", device)
        with torch.no_grad():
            robust = (model(x_adv).argmax(1) == y).float().mean().item()
        print(f"| {precision} | {(grad == 0).float().mean().item():.4%} | {robust:.3f} |")


if __name__ == "__main__":
    main()
