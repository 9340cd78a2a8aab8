"""How CRAIG's greedy scales with the size of a class: measured points, a fitted exponent, and
the projection to 1.2M examples at 10 and at 1,000 classes.

    .venv/bin/python benchmarks/bench_scaling.py [--repeats 3] [--exact 2500,5000,10000,20000]
                                                 [--stochastic 5000,10000,20000,40000]

Workload per point: one class of ``n`` clustered 10-dim embeddings (12 Gaussian clusters,
seed 0), ``k = 0.3 n`` picks, one torch thread; each point runs in a fresh process, which
reports the median wall time of ``--repeats`` calls and its peak resident memory above the
process's size before the calls (RSS sampled every 5 ms). "exact" is ``facility_location_greedy`` (the
n x n int16 grid, what CRAIG runs up to ``EXACT_LIMIT`` rows), "stochastic" is
``stochastic_facility_greedy`` (ε = 0.01, what it runs above). The fit is least squares of
log time (and log memory) on log n; a projection multiplies the per-class figure by the
number of classes, since classes are selected one after another.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, table  # noqa: E402

POINT = r'''
import json, psutil, statistics, sys, threading, time, torch
torch.set_num_threads(1)
from distributed_adcs.coreset.facility import facility_location_greedy
from distributed_adcs.coreset.stochastic import stochastic_facility_greedy
kind, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
centres = torch.randn(12, 10, generator=g) * 3
x = centres[torch.randint(0, 12, (n,), generator=g)] + torch.randn(n, 10, generator=g)
k = int(0.3 * n)
proc = psutil.Process()
before, peak, done = proc.memory_info().rss, [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss - before)
        time.sleep(0.005)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
times = []
for r in range(repeats):
    t = time.perf_counter()
    if kind == "exact":
        facility_location_greedy(x, k)
    else:
        stochastic_facility_greedy(x, k, generator=torch.Generator().manual_seed(r))
    times.append(time.perf_counter() - t)
done.set(); sampler.join()
print(json.dumps({"time_s": statistics.median(times), "peak_bytes": peak[0]}))
'''


def measure(kind: str, n: int, repeats: int) -> dict:
    out = subprocess.run([sys.executable, "-c", POINT, kind, str(n), str(repeats)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fit(ns: list[int], ys: list[float]) -> tuple[float, float]:
    """Least squares of log y = a + b log n: returns (a, b)."""
    lx, ly = [math.log(n) for n in ns], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    b = sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / sum((x - mx) ** 2 for x in lx)
    return my - b * mx, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exact", default="2500,5000,10000,20000")
    parser.add_argument("--stochastic", default="5000,10000,20000,40000")
    args = parser.parse_args()
    print(header("bench_scaling: CRAIG's greedy against the size of a class", args.repeats))
    rows, fits = [], {}
    for kind in ("exact", "stochastic"):
        ns = [int(v) for v in getattr(args, kind).split(",")]
        points = []
        for n in ns:
            p = measure(kind, n, args.repeats)
            points.append(p)
            rows.append({"greedy": kind, "n": n, "k": int(0.3 * n), "time_s": p["time_s"],
                         "peak_MB": p["peak_bytes"] / 1e6})
            print(f"{kind} n={n}: {p['time_s']:.2f} s, {p['peak_bytes'] / 1e6:.0f} MB", flush=True)
        fits[kind] = (fit(ns, [p["time_s"] for p in points]), fit(ns, [max(p["peak_bytes"], 1) for p in points]))
    print(table(rows, ["greedy", "n", "k", "time_s", "peak_MB"]))
    proj = []
    for kind, ((ta, tb), (ma, mb)) in fits.items():
        for classes in (10, 1000):
            n_c = 1_200_000 // classes
            proj.append({"greedy": kind, "time exponent": tb, "memory exponent": mb, "classes": classes,
                         "n per class": n_c, "time per class s": math.exp(ta) * n_c ** tb,
                         "total time h": classes * math.exp(ta) * n_c ** tb / 3600,
                         "peak GB": math.exp(ma) * n_c ** mb / 1e9})
    print(table(proj, ["greedy", "time exponent", "memory exponent", "classes", "n per class", "time per class s",
                       "total time h", "peak GB"]))


if __name__ == "__main__":
    main()
