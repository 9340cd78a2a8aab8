"""Time one clean epoch and one PGD-10 adversarial epoch of ``small_cnn``.

Data: 60,000 random uniform 1x28x28 tensors with random labels (the shape of
Fashion-MNIST's training set; the values do not change the cost). Optimiser:
SGD (lr 0.01, momentum 0.9), batch 128, so an epoch is 469 batches. The attack
is l-inf PGD, eps 0.1, step 0.025, 10 steps from a uniform random start,
computed in eval mode (BatchNorm on running statistics), followed by one
training step on the adversarial batch: 11 forward+backward passes per example.

Run (both rows time full epochs; --pgd-batches N times N batches and
extrapolates linearly, "epoch CPU s" is process CPU time scaled the same way):
    .venv/bin/python benchmarks/bench_small_cnn.py --threads 2
    .venv/bin/python benchmarks/bench_small_cnn.py --threads 1

Measured 2026-11-24 on "Intel(R) Xeon(R) Processor", 2 logical CPUs, shared
with other jobs (1-minute load average 0.95 -> 2.5 during the runs), torch
2.14.1, python 3.11.7, small_cnn (151,530 parameters), one run per row:

| threads | clean epoch s | PGD-10 epoch s | PGD-10 median s/batch |
| --- | --- | --- | --- |
| 2 | 10.2 | 148.6 | 0.220 (median x 469 = 103 s) |
| 1 | 13.7 | 192.4 | 0.396 |

With 2 threads on a busy machine, OpenMP threads wait on each other: at a load
average near 4, a clean epoch of an earlier (max-pool) version of small_cnn
extrapolated to 197 s with 2 threads and 22 s with 1, so prefer 1 thread per
process when the cores are shared.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distributed_adcs.models import build_model

EXAMPLES = 60_000
IMAGE_SHAPE = (1, 28, 28)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530  # of [0, 1] training pixels


def pgd_linf(model: nn.Module, x: Tensor, y: Tensor, eps: float, step: float, steps: int) -> Tensor:
    """Minimal l-inf PGD from a uniform random start; returns images in [0, 1].

    Only the input gradient is requested, so autograd skips weight gradients.
    """
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += step * grad.sign()
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(0, 1) - x)
    return (x + delta).detach()


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    model.train()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def run_epoch(
    step: Callable[[Tensor, Tensor], None], x: Tensor, y: Tensor, batch: int, limit: int
) -> tuple[list[float], float]:
    """Run ``step`` on shuffled batches.

    Args:
        limit: number of batches to time; 0 means the whole epoch.

    Returns:
        Per-batch wall times and the total process CPU time, both in seconds.
        With one thread, CPU time approximates the wall time on an idle core,
        which matters on a machine shared with other jobs.
    """
    order = torch.randperm(len(x))
    full = math.ceil(len(x) / batch)
    batches = full if limit == 0 else min(limit, full)
    times = []
    cpu_start = time.process_time()
    for b in range(batches):
        idx = order[b * batch : (b + 1) * batch]
        start = time.perf_counter()
        step(x[idx], y[idx])
        times.append(time.perf_counter() - start)
    return times, time.process_time() - cpu_start


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--clean-batches", type=int, default=0, help="batches to time; 0 = full epoch")
    parser.add_argument("--pgd-batches", type=int, default=0, help="batches to time; 0 = full epoch")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches before each timed epoch")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28,
                        mean=[FASHION_MNIST_MEAN], std=[FASHION_MNIST_STD])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(EXAMPLES, *IMAGE_SHAPE)
    y = torch.randint(0, 10, (EXAMPLES,))

    def clean(xb: Tensor, yb: Tensor) -> None:
        train_step(model, opt, xb, yb)

    def adversarial(xb: Tensor, yb: Tensor) -> None:
        model.eval()
        train_step(model, opt, pgd_linf(model, xb, yb, eps=0.1, step=0.025, steps=10), yb)

    full = math.ceil(EXAMPLES / args.batch_size)
    params = sum(p.numel() for p in model.parameters())
    print(f"hardware: {cpu_name()}, {os.cpu_count()} logical CPUs, load avg {os.getloadavg()[0]:.2f}")
    print(f"torch {torch.__version__}, python {platform.python_version()}, threads {torch.get_num_threads()}")
    print(f"small_cnn: {params:,} parameters; batch {args.batch_size}; {full} batches per epoch of {EXAMPLES:,}")
    print("\n| epoch | warm-up s | batches timed | median s/batch | measured s | epoch s | epoch CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, step, limit in (("clean", clean, args.clean_batches), ("PGD-10", adversarial, args.pgd_batches)):
        warm = sum(run_epoch(step, x, y, args.batch_size, args.warmup)[0]) if args.warmup else 0.0
        times, cpu = run_epoch(step, x, y, args.batch_size, limit)
        scale = full / len(times)  # 1 for a full epoch, else a linear extrapolation
        print(f"| {name} | {warm:.1f} | {len(times)} | {statistics.median(times):.4f} | {sum(times):.1f} "
              f"| {sum(times) * scale:.1f} | {cpu * scale:.1f} |", flush=True)
    print(f"\nload avg at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
