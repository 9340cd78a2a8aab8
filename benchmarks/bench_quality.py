"""Does a coreset earn its keep? Every arm of adversarial training, paired over seeds.

    .venv/bin/python benchmarks/bench_quality.py              # the benchmark (hours; resumable)
    .venv/bin/python benchmarks/bench_quality.py --smoke      # every arm tiny, the same table (minutes)
    .venv/bin/python benchmarks/bench_quality.py --probe      # full AT's validation curve, to choose --epochs
    .venv/bin/python benchmarks/bench_quality.py --report     # rebuild the table from MLflow only

Arms (one MLflow run each, experiment ``bench-quality`` in ``--store``): full adversarial
training for E epochs; full AT with the compute of the subset arms (fewer epochs); random drawn
once; random redrawn every epoch (RS2); CRAIG; GradMatch; adaptive. All at fraction 0.3, then
0.1 and 0.2 for the two best subset arms (chosen on the validation split), then full, random
redrawn and the best arm at a short schedule. Every arm runs for every seed; seeds pair arms.

Resumable: a finished arm is skipped, an arm cut off mid-way resumes from its last checkpoint
(``adcs train --resume``). Every finished arm is also written to ``--records`` (default
``benchmarks/quality_records/``, committed): a JSON file with its tags, final metrics and
curves, which a run on another machine imports into its MLflow store as a finished run, so a
benchmark spread over several machines (or sessions) still skips what is done. While a file
``PAUSE`` exists in the store, no new arm starts (to run something else between arms). Each
arm prints one line with an estimate of the time left. Every arm is evaluated on the same
first ``--test`` test images: PGD-50 with 2 restarts, and AutoAttack: the published standard
version for the headline arms (every arm at fraction 0.3 and E; at 0.1 and 0.2 the best arm
and random redrawn; the short schedule), torchattacks' 10-iteration version, named ``fast``,
for the others; arms that ran ``fast`` before they became headline get the published one
added from their checkpoint. Cost is wall time and passes through the model.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "bench-quality"


@dataclass(frozen=True)
class Arm:
    name: str  # what the table calls it
    method: str
    fraction: float
    epochs: int
    every: int
    headline: bool = False  # evaluated with the published AutoAttack
    extra: tuple[str, ...] = field(default=())
    schedule: int = 0  # the E this arm is compared at (full_matched runs fewer epochs); 0: its own

    @property
    def compared_at(self) -> int:
        return self.schedule or self.epochs

    @property
    def key(self) -> str:
        return f"{self.name}-f{self.fraction:g}-E{self.compared_at}"


SUBSET_ARMS = {  # name: (method, every)
    "random_once": ("random", 10**6),
    "random_every": ("random", 1),
    "craig": ("craig", 3),
    "gradmatch": ("gradmatch", 3),
    "adaptive": ("adaptive", 1),
}


TABLE_ARMS = ("full", "full_matched", *SUBSET_ARMS)


def matched_epochs(epochs: int, warmup: int, fraction: float) -> int:
    """Full-data epochs with the training compute of a subset arm: warm-up plus the subset epochs."""
    return max(1, round(warmup + fraction * (epochs - warmup)))


def first_arms(epochs: int, warmup: int, fraction: float = 0.3) -> list[Arm]:
    arms = [Arm("full", "full", 1.0, epochs, 1, headline=True),
            Arm("full_matched", "full", 1.0, matched_epochs(epochs, warmup, fraction), 1, headline=True,
                schedule=epochs)]
    # every arm of the headline fraction gets the published AutoAttack: the best of them is
    # only known once they have run, and it is compared with full AT under the same attack
    arms += [Arm(name, method, fraction, epochs, min(every, epochs), headline=True)
             for name, (method, every) in SUBSET_ARMS.items()]
    return arms


def later_arms(best: list[str], epochs: int, short: int, warmup: int) -> list[Arm]:
    """0.1 and 0.2 for the two best subset arms and for random redrawn (target 3 compares them),
    then the short schedule."""
    names = list(dict.fromkeys([*best, "random_every"]))
    arms = [Arm(name, SUBSET_ARMS[name][0], f, epochs, min(SUBSET_ARMS[name][1], epochs),
                headline=name in (best[0], "random_every")) for f in (0.1, 0.2) for name in names]
    w = min(warmup, short - 1)
    arms += [Arm("full", "full", 1.0, short, 1, headline=True)]
    arms += [Arm(name, SUBSET_ARMS[name][0], 0.3, short, min(SUBSET_ARMS[name][1], short), headline=True,
                 extra=(f"coreset.warmup_epochs={w}",)) for name in dict.fromkeys(["random_every", best[0]])]
    return arms


def overrides(arm: Arm, seed: int, a: argparse.Namespace) -> list[str]:
    aa = "standard" if arm.headline and not a.smoke else "fast"
    return [f"seed={seed}", f"data.limit={a.n}", f"data.val_size={a.val}", "ray.num_workers=0", "ray.num_actors=0",
            f"coreset.method={arm.method}", f"coreset.fraction={arm.fraction}", f"coreset.every={arm.every}",
            f"coreset.warmup_epochs={a.warmup}", f"train.epochs={arm.epochs}", f"eval.val_every={a.val_every}",
            f"eval.test_limit={a.test}", f"eval.pgd_steps={a.pgd_steps}", "eval.pgd_restarts=2",
            "eval.autoattack=true", f"eval.autoattack_n={a.aa_n}", f"eval.autoattack_version={aa}",
            f"mlflow.tracking_uri={a.uri}", f"mlflow.experiment={EXPERIMENT}", f"mlflow.run_name={arm.key}-s{seed}",
            f"train.output_dir={a.store / 'runs'}", *a.set, *arm.extra]


def _runs(client, key: str | None = None):
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    query = f"tags.`bench.key` = '{key}'" if key else ""
    return client.search_runs([exp.experiment_id], filter_string=query, max_results=5000)


def run_arm(arm: Arm, seed: int, a: argparse.Namespace, client) -> str:
    """Run (or resume, or skip) one arm for one seed; return ``finished``, ``resumed`` or ``ran``."""
    from distributed_adcs.config import UsageError, load_config
    from distributed_adcs.run import train

    key = f"{arm.key}-s{seed}"
    previous = _runs(client, key)
    if any(r.info.status == "FINISHED" for r in previous):
        return "finished"
    resume = next((r.info.run_id for r in previous if r.info.status != "FINISHED"), None)
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", overrides(arm, seed, a))
    log = a.store / "logs" / f"{key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    with log.open("a") as out, contextlib.redirect_stdout(out):
        try:
            run_id = train(cfg, resume=resume)
        except UsageError:  # cut off before its first checkpoint: start that arm again
            client.set_terminated(resume, status="FAILED")
            resume, run_id = None, train(cfg)
    wall = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    client.set_tag(run_id, "bench.key", key)
    for k, v in {"bench.arm": arm.name, "bench.seed": seed, "bench.fraction": arm.fraction, "bench.epochs": arm.epochs,
                 "bench.schedule": arm.compared_at,
                 "bench.headline": arm.headline, "bench.resumed": resume is not None}.items():
        client.set_tag(run_id, k, str(v))
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    import torch

    client.log_batch(run_id, metrics=[Metric("bench_wall_s", wall, now, 0),
                                      # the share of its threads' time the arm got: below QUIET_SHARE
                                      # something else ran beside it and its wall time is not used
                                      Metric("bench_cpu_share", cpu / (wall * torch.get_num_threads()), now, 0),
                                      Metric("bench_load1_before", load_before, now, 0),
                                      Metric("bench_load1_after", os.getloadavg()[0], now, 0)])
    return "resumed" if resume else "ran"


HISTORIES = ("val_robust_acc", "wall_time_s")  # the curves the plot needs
QUIET_SHARE = 0.9  # an arm that got this share of its threads' CPU time ran on a quiet machine
QUIET_LOAD = (os.cpu_count() or 1) + 0.5  # records from before bench_cpu_share: the 1-minute load average


def _cpu_s() -> float:
    import resource

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def quiet(metrics: dict) -> bool:
    """Whether an arm's wall time can be compared: it ran with nothing beside it."""
    if "bench_cpu_share" in metrics:
        return metrics["bench_cpu_share"] >= QUIET_SHARE
    loads = [metrics.get("bench_load1_before"), metrics.get("bench_load1_after")]
    return all(v is not None and v <= QUIET_LOAD for v in loads)


def export_records(client, records: Path) -> int:
    """Write every finished arm that has no record file yet; return how many were written."""
    import json

    records.mkdir(parents=True, exist_ok=True)
    written = 0
    for r in _runs(client):
        key = r.data.tags.get("bench.key")
        path = records / f"{key}.json"
        if r.info.status != "FINISHED" or key is None or path.exists():
            continue
        history = {name: [[m.step, m.value] for m in sorted(client.get_metric_history(r.info.run_id, name),
                                                             key=lambda m: m.step)] for name in HISTORIES}
        tags = {k: v for k, v in r.data.tags.items() if k.startswith("bench.") and k != "bench.imported"}
        path.write_text(json.dumps({"key": key, "run_id": r.info.run_id, "tags": tags, "metrics": r.data.metrics,
                                    "params": r.data.params, "history": history}, indent=1, sort_keys=True) + "\n")
        written += 1
    return written


def import_records(client, records: Path) -> int:
    """Log every record file whose arm has no finished run in this store as a finished run
    (tagged ``bench.imported``); return how many were imported."""
    import json

    from mlflow.entities import Metric, Param

    exp = client.get_experiment_by_name(EXPERIMENT)
    imported = 0
    for path in sorted(records.glob("*.json")) if records.is_dir() else []:
        rec = json.loads(path.read_text())
        if any(r.info.status == "FINISHED" for r in _runs(client, rec["key"])):
            continue
        run = client.create_run(exp.experiment_id, run_name=rec["key"],
                                tags={**rec["tags"], "bench.imported": rec["run_id"], "bench.record": path.name})
        rid, now = run.info.run_id, int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in rec["metrics"].items() if k not in rec["history"]]
        metrics += [Metric(name, v, now, step) for name, points in rec["history"].items() for step, v in points]
        params = [Param(k, v) for k, v in rec.get("params", {}).items()]
        for i in range(0, len(params), 100):  # MLflow's batch limits: 100 params, 1,000 entries
            client.log_batch(rid, params=params[i:i + 100])
        for i in range(0, len(metrics), 900):
            client.log_batch(rid, metrics=metrics[i:i + 900])
        client.set_terminated(rid, status="FINISHED")
        imported += 1
    return imported


def complete_headline(client, arms: list[Arm], a: argparse.Namespace) -> None:
    """Finished runs of headline arms that ran the fast AutoAttack (arms that became headline
    after they ran) get the published one, from their checkpoint (``adcs evaluate --run``),
    logged to the run as ``evaluate_test_autoattack_acc``; their records are rewritten. Runs
    imported from records have no checkpoint here and keep what they have."""
    from distributed_adcs.evaluate import evaluate

    for arm in (arm for arm in arms if arm.headline and not a.smoke):
        for seed in a.seeds:
            for r in _runs(client, f"{arm.key}-s{seed}"):
                m = r.data.metrics
                if (r.info.status != "FINISHED" or "test_autoattack_acc" in m or "evaluate_test_autoattack_acc" in m
                        or "bench.imported" in r.data.tags):
                    continue
                t0 = time.perf_counter()
                log = a.store / "logs" / f"{arm.key}-s{seed}.log"
                with log.open("a") as out, contextlib.redirect_stdout(out):
                    evaluate(run_id=r.info.run_id, tracking_uri=a.uri,
                             overrides=["eval.autoattack=true", "eval.autoattack_version=standard",
                                        f"eval.autoattack_n={a.aa_n}", f"eval.test_limit={a.test}"])
                (a.records / f"{arm.key}-s{seed}.json").unlink(missing_ok=True)
                export_records(client, a.records)
                print(f"{arm.key} seed {seed}: published AutoAttack added in {time.perf_counter() - t0:.0f} s",
                      flush=True)


def wait_while_paused(store: Path) -> None:
    """Hold the next arm while ``store/PAUSE`` exists (tests or other work between arms)."""
    flag, said = store / "PAUSE", False
    while flag.exists():
        if not said:
            print(f"paused: {flag} exists; the next arm starts when it is removed", flush=True)
            said = True
        time.sleep(5)


def _cost_units(arm: Arm, warmup: int) -> float:
    """Rough training cost in full epochs (for the time-left estimate)."""
    if arm.method == "full":
        return arm.epochs
    return warmup + arm.fraction * (arm.epochs - warmup) + 1.5


def run_all(arms: list[Arm], a: argparse.Namespace, client) -> None:
    total = len(arms) * len(a.seeds)
    done, spent, units_done = 0, 0.0, 0.0
    # seed-major: a run cut off early still has whole seeds of paired arms
    pending = [(arm, seed) for seed in a.seeds for arm in arms]
    for i, (arm, seed) in enumerate(pending):
        wait_while_paused(a.store)
        t0 = time.perf_counter()
        what = run_arm(arm, seed, a, client)
        dt = time.perf_counter() - t0
        export_records(client, a.records)
        done += 1
        if what != "finished":
            spent += dt
            units_done += _cost_units(arm, a.warmup)
        left = sum(_cost_units(p, a.warmup) for p, _ in pending[i + 1:])
        eta = f"{left * spent / units_done / 60:.0f} min left" if units_done else "time left: unknown yet"
        print(f"[{done}/{total}] {arm.key} seed {seed}: {what} in {dt:.0f} s; {eta}", flush=True)


def rows_from_mlflow(client) -> list[dict]:
    rows = []
    for r in _runs(client):
        if r.info.status != "FINISHED" or r.data.tags.get("bench.arm") not in TABLE_ARMS:  # not the probe
            continue
        m, t = r.data.metrics, r.data.tags
        pgd = next((v for k, v in m.items() if k.startswith("test_pgd") and k.endswith("_acc") and "class" not in k), None)
        rows.append({"arm": t["bench.arm"], "fraction": float(t["bench.fraction"]), "epochs": int(t["bench.schedule"]),
                     "own_epochs": int(t["bench.epochs"]),
                     "seed": int(t["bench.seed"]), "clean": m.get("test_clean_acc"), "pgd": pgd,
                     "aa": m.get("test_autoattack_acc", m.get("evaluate_test_autoattack_acc")),
                     "aa_fast": m.get("test_autoattack_fast_acc"),
                     "wall": m.get("bench_wall_s"), "test_s": m.get("time_test_s"), "passes": m.get("passes_forward", 0) + m.get("passes_backward", 0),
                     "val": m.get("val_robust_acc"), "load": m.get("bench_load1_after"), "quiet": quiet(m),
                     "run_id": r.info.run_id})
    return rows


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _ratio(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f}x" if values else "-"


def summary(rows: list[dict]) -> tuple[str, dict]:
    """The markdown table (mean ± std over seeds, per-seed values) and the per-arm means."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["epochs"], r["fraction"], r["arm"]), []).append(r)
    full = {(r["epochs"], r["seed"]): r for r in rows if r["arm"] == "full"}
    lines = ["| E | fraction | arm | seeds | clean | PGD-50 | AutoAttack | AA (fast) | wall s (quiet seeds) | speed-up (wall) "
             "| speed-up (wall, no test eval) | speed-up (passes) | per seed: AA or fast |", "|" + "---|" * 13]
    means = {}
    for (epochs, fraction, arm), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        base = [full.get((epochs, r["seed"])) for r in rs]
        timed = [(r, b) for r, b in zip(rs, base) if b and r["wall"] and r["quiet"] and b["quiet"]]
        wall_x = [b["wall"] / r["wall"] for r, b in timed]
        pass_x = [b["passes"] / r["passes"] for r, b in zip(rs, base) if b and r["passes"]]
        # the same without the final test evaluation (AutoAttack's time depends on the model it attacks)
        train_x = [(b["wall"] - b["test_s"]) / (r["wall"] - r["test_s"]) for r, b in timed
                   if r["test_s"] is not None and b["test_s"] is not None]
        quiet_walls = [r["wall"] for r in rs if r["quiet"] and r["wall"]]
        per_seed = ", ".join(f"{r['aa'] if r['aa'] is not None else r['aa_fast']:.3f}" for r in rs
                             if (r["aa"] if r["aa"] is not None else r["aa_fast"]) is not None)
        lines.append(f"| {epochs} | {fraction:g} | {arm} | {len(rs)} | {_mean_std([r['clean'] for r in rs])} "
                     f"| {_mean_std([r['pgd'] for r in rs])} | {_mean_std([r['aa'] for r in rs])} "
                     f"| {_mean_std([r['aa_fast'] for r in rs])} "
                     f"| {f'{statistics.mean(quiet_walls):.0f}' if quiet_walls else '-'} ({len(quiet_walls)}) "
                     f"| {_ratio(wall_x)} | {_ratio(train_x)} | {_ratio(pass_x)} | {per_seed} |")
        means[(epochs, fraction, arm)] = {"val": statistics.mean([r["val"] or 0 for r in rs]), "rows": rs}
    return "\n".join(lines), means


def _aa(r: dict) -> float | None:
    return r["aa"] if r["aa"] is not None else r["aa_fast"]


def _paired(rows: list[dict], arm: str, fraction: float, epochs: int) -> dict[int, dict]:
    return {r["seed"]: r for r in rows if r["arm"] == arm and r["fraction"] == fraction and r["epochs"] == epochs}


def targets(rows: list[dict], means: dict, epochs: int) -> list[str]:
    """The issue's four targets for the best arm (chosen on validation), MET or MISSED with numbers."""
    best = best_subset_arms(means, epochs)
    if not best:
        return ["No subset arm has finished yet."]
    b = best[0]
    full, mine = _paired(rows, "full", 1.0, epochs), _paired(rows, b, 0.3, epochs)
    seeds = sorted(set(full) & set(mine))
    if not seeds:
        return [f"Best arm so far: {b}; no seed has both it and full AT finished."]
    kind = "AutoAttack" if all(mine[s]["aa"] is not None and full[s]["aa"] is not None for s in seeds) else "AA (fast)"
    mean = lambda xs: statistics.mean(xs) if xs else float("nan")  # noqa: E731
    timed = [s for s in seeds if full[s]["quiet"] and mine[s]["quiet"]]  # wall times of quiet pairs only
    wall = mean([full[s]["wall"] / mine[s]["wall"] for s in timed])
    passes = mean([full[s]["passes"] / mine[s]["passes"] for s in seeds])
    no_test = mean([(full[s]["wall"] - full[s]["test_s"]) / (mine[s]["wall"] - mine[s]["test_s"]) for s in timed
                    if full[s]["test_s"] is not None and mine[s]["test_s"] is not None])
    gap_full = mean([(_aa(full[s]) - _aa(mine[s])) * 100 for s in seeds])
    out = [f"Best subset arm at fraction 0.3 (by validation robust accuracy): **{b}**; {len(seeds)} paired seeds; "
           f"accuracy is {kind}.",
           f"1. >= 2.5x faster than full AT: {'MET' if wall >= 2.5 and passes >= 2.5 else 'MISSED'} "
           f"({wall:.2f}x wall end to end over {len(timed)} quiet seed(s), {no_test:.2f}x without the final test "
           f"evaluation, {passes:.2f}x passes over {len(seeds)}).",
           f"2. within 1.0 point of full AT: {'MET' if gap_full <= 1.0 else 'MISSED'} ({gap_full:+.2f} points below).",
           ]
    for fraction in (0.3, 0.1):
        rnd, me = _paired(rows, "random_every", fraction, epochs), _paired(rows, b, fraction, epochs)
        common = sorted(set(rnd) & set(me))
        diffs = [(_aa(me[s]) - _aa(rnd[s])) * 100 for s in common]
        ok = bool(diffs) and mean(diffs) >= 1.0 and sum(d > 0 for d in diffs) >= min(2, len(diffs))
        out.append(f"3. beats random redrawn every epoch by >= 1 point at fraction {fraction:g}: "
                   f"{'MET' if ok else 'MISSED'} ({mean(diffs):+.2f} points; per seed "
                   f"{', '.join(f'{d:+.1f}' for d in diffs) or 'none yet'}).")
    matched = _paired(rows, "full_matched", 1.0, epochs)
    common = sorted(set(matched) & set(mine))
    diff = mean([(_aa(mine[s]) - _aa(matched[s])) * 100 for s in common])
    out.append(f"4. beats compute-matched full AT by >= 1 point: {'MET' if diff >= 1.0 else 'MISSED'} ({diff:+.2f} points).")
    return out


def plot(client, rows: list[dict], epochs: int, path: Path) -> None:
    """Validation robust accuracy against wall-clock time, mean over seeds, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["epochs"] == epochs:
            groups.setdefault(f"{r['arm']} {r['fraction']:g}", []).append(r)
    for label, rs in sorted(groups.items()):
        curves = []
        for r in rs:
            acc = {m.step: m.value for m in client.get_metric_history(r["run_id"], "val_robust_acc")}
            wall = {m.step: m.value for m in client.get_metric_history(r["run_id"], "wall_time_s")}
            curves.append([(wall[k], acc[k]) for k in sorted(acc) if k in wall])
        n = min(len(c) for c in curves)
        if n:
            xs = [statistics.mean(c[i][0] for c in curves) / 60 for i in range(n)]
            ys = [statistics.mean(c[i][1] for c in curves) for i in range(n)]
            ax.plot(xs, ys, "o-", ms=3, label=label)
    ax.set_xlabel("training wall-clock time (min), mean over seeds")
    ax.set_ylabel("validation robust accuracy (PGD)")
    ax.set_title(f"bench_quality, E = {epochs}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def best_subset_arms(means: dict, epochs: int) -> list[str]:
    """The two subset arms with the best mean validation robust accuracy at fraction 0.3."""
    scored = sorted(((v["val"], arm) for (e, f, arm), v in means.items() if e == epochs and f == 0.3
                     and arm in SUBSET_ARMS), reverse=True)
    return [arm for _, arm in scored[:2]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="every arm tiny (minutes), results in a temporary store")
    ap.add_argument("--probe", action="store_true", help="only full AT's validation curve at --probe-epochs")
    ap.add_argument("--report", action="store_true", help="only rebuild the table from the store")
    ap.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; smoke: 0,1)")
    ap.add_argument("--n", type=int, default=10000, help="training images")
    ap.add_argument("--val", type=int, default=1000, help="validation images (choices are made on these)")
    ap.add_argument("--test", type=int, default=1000, help="test images every arm is evaluated on")
    ap.add_argument("--epochs", type=int, default=40, help="E (chosen with --probe: docs/results.md)")
    ap.add_argument("--short", type=int, default=12, help="the short schedule")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--val-every", type=int, default=2)
    ap.add_argument("--pgd-steps", type=int, default=50)
    ap.add_argument("--aa-n", type=int, default=500, help="test images given to AutoAttack (the first of --test)")
    ap.add_argument("--probe-epochs", type=int, default=60)
    ap.add_argument("--store", type=Path, default=None,
                    help="MLflow store and checkpoints (default benchmarks/results/quality; smoke: a new temporary one)")
    ap.add_argument("--records", type=Path, default=None,
                    help="finished arms as JSON (default benchmarks/quality_records; smoke: in the store)")
    ap.add_argument("--set", action="append", default=[], help="extra config override for every arm")
    ap.add_argument("--out", type=Path, default=None, help="markdown results (default docs/results.md; smoke: store)")
    a = ap.parse_args()
    if a.smoke:
        import tempfile

        a.store = a.store or Path(tempfile.mkdtemp(prefix="bench-quality-smoke-"))
        a.seeds = a.seeds or "0,1"
        a.n, a.val, a.test, a.epochs, a.short, a.warmup = 384, 128, 128, 3, 2, 1
        a.pgd_steps, a.aa_n, a.val_every, a.probe_epochs = 3, 8, 1, 3
        a.set = [*a.set, "objective.steps=2", "eval.val_pgd_steps=2", "data.batch_size=64"]
    a.seeds = [int(s) for s in (a.seeds or "0,1,2").split(",")]
    a.store = (a.store or ROOT / "benchmarks" / "results" / "quality").resolve()
    a.store.mkdir(parents=True, exist_ok=True)
    a.uri = f"sqlite:///{a.store / 'mlflow.db'}"
    a.records = (a.records or (a.store / "records" if a.smoke else ROOT / "benchmarks" / "quality_records")).resolve()
    out = a.out or (a.store / "results.md" if a.smoke else ROOT / "docs" / "results.md")

    from common import header
    from mlflow.tracking import MlflowClient

    from distributed_adcs.progress import set_quiet
    from distributed_adcs.tracking import RunTracker

    set_quiet(True)
    RunTracker(a.uri, EXPERIMENT)  # creates the store and experiment once, before any arm
    client = MlflowClient(a.uri)
    print(header("bench_quality: coreset arms against full adversarial training", len(a.seeds)), flush=True)
    if a.probe:  # the probe is no arm of the table: it keeps to the store
        a.records = a.store / "records"
    n = import_records(client, a.records)
    if n:
        print(f"imported {n} finished arms from {a.records}", flush=True)
    if a.probe:
        arm = Arm("probe_full", "full", 1.0, a.probe_epochs, 1)
        run_all([arm], _probe_args(a), client)
        probe_report(client, arm, a, out.with_name("probe_full.png"))
        return 0
    if not a.report:
        complete_headline(client, first_arms(a.epochs, a.warmup), a)  # while this machine has their checkpoints
        run_all(first_arms(a.epochs, a.warmup), a, client)
        _, means = summary(rows_from_mlflow(client))
        best = best_subset_arms(means, a.epochs)
        print(f"best subset arms at fraction 0.3 (validation robust accuracy): {', '.join(best)}", flush=True)
        run_all(later_arms(best, a.epochs, a.short, a.warmup), a, client)
    rows = rows_from_mlflow(client)
    table, means = summary(rows)
    verdict = targets(rows, means, a.epochs)
    png = out.with_name("results_quality.png")
    plot(client, rows, a.epochs, png)
    loads = [r["load"] for r in rows if r["load"] is not None]
    n_quiet = sum(r["quiet"] for r in rows)
    calm = (f"load average after the arms: median {statistics.median(loads):.2f}, max {max(loads):.2f}; wall times "
            f"and their speed-ups come from the {n_quiet} of {len(rows)} arms that ran alone (an arm that got "
            f">= {QUIET_SHARE:.0%} of its threads' CPU time, or, recorded before that was measured, a 1-minute "
            f"load average <= {QUIET_LOAD:g} before and after it); passes from every arm" if loads else "")
    print("\n".join(verdict))
    print(table)
    block = ("\n".join(verdict) + "\n\n"
             f"Command: `python benchmarks/bench_quality.py{' --smoke' if a.smoke else ''}` "
             f"(n={a.n} Fashion-MNIST training images, E={a.epochs}, short {a.short}, seeds {a.seeds}, "
             f"{a.test} test images). {header_line()}. {calm}.\n\n{table}\n\n![robust accuracy against time]"
             f"({png.name})\n")
    write_results(out, block)
    print(f"results: {out}, {png}")
    return 0


BEGIN, END = "<!-- bench_quality: begin (generated) -->", "<!-- bench_quality: end -->"


def write_results(out: Path, block: str) -> None:
    """Put the generated ``block`` between the markers of ``out`` (the prose around them is kept),
    or write a new file that is only the block."""
    text = out.read_text() if out.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        out.write_text(f"{head}{BEGIN}\n{block}{END}{rest.split(END, 1)[1]}")
    else:
        out.write_text(f"# bench_quality results\n\n{BEGIN}\n{block}{END}\n")


def header_line() -> str:
    import platform

    import torch

    return (f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
            f"python {platform.python_version()}")


def probe_report(client, arm: Arm, a: argparse.Namespace, png: Path) -> None:
    """Full AT's validation robust accuracy per epoch: where it stops rising sets --epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (run,) = [r for r in _runs(client, f"{arm.key}-s{a.seeds[0]}") if r.info.status == "FINISHED"][:1]
    hist = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_robust_acc"))
    best_step, best = max(hist, key=lambda sv: sv[1])
    plateau = next(s for s, v in hist if v >= best - 0.01)  # first epoch within 1 point of the best
    print("epoch val_robust_acc")
    for step, value in hist:
        print(f"{step + 1:5d} {value:.4f}")
    print(f"best {best:.4f} at epoch {best_step + 1}; within 1 point of it from epoch {plateau + 1} "
          f"(cosine schedule over {arm.epochs} epochs)")
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    ax.plot([s + 1 for s, _ in hist], [v for _, v in hist], "o-", ms=3)
    ax.axvline(plateau + 1, color="grey", ls="--", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation robust accuracy (PGD-10)")
    ax.set_title(f"full adversarial training, n={a.n}, cosine over {arm.epochs} epochs")
    ax.grid(alpha=0.3)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print(f"curve: {png}")


def _probe_args(a: argparse.Namespace) -> argparse.Namespace:
    probe = argparse.Namespace(**vars(a))
    probe.val_every, probe.seeds = 1, a.seeds[:1]
    return probe


if __name__ == "__main__":
    raise SystemExit(main())
