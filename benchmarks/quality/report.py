"""bench_quality's report, rebuilt from the MLflow store alone: one row per arm (mean ± std
over seeds), the issue's four targets for the best arm, accuracy against time, and the results
file. Full AT's schedule probe has a report of its own."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from .arms import ARMS, SUBSET_ARMS, Arm
from .records import finished, runs
from .settings import EXPERIMENT, Settings

QUIET_SHARE = 0.9  # an arm that got this share of its threads' CPU time ran on a quiet machine
QUIET_LOAD = (os.cpu_count() or 1) + 0.5  # records from before bench_cpu_share: the 1-minute load average
BEGIN, END = "<!-- bench_quality: begin (generated) -->", "<!-- bench_quality: end -->"


def quiet(metrics: dict, tags: dict) -> bool:
    """Whether an arm's wall time can be compared: it ran in one piece (a resumed arm's wall
    time is its last process's only) with nothing beside it."""
    if tags.get("bench.resumed") == "True":
        return False
    if "bench_cpu_share" in metrics:
        return metrics["bench_cpu_share"] >= QUIET_SHARE
    loads = [metrics.get("bench_load1_before"), metrics.get("bench_load1_after")]
    return all(v is not None and v <= QUIET_LOAD for v in loads)


def rows_from_mlflow(client, experiment: str = EXPERIMENT) -> list[dict]:
    rows = []
    for r in runs(client, experiment):
        if not finished(r) or r.data.tags.get("bench.arm") not in ARMS:  # not the probe
            continue
        m, t = r.data.metrics, r.data.tags
        pgd = next((v for k, v in m.items() if k.startswith("test_pgd") and k.endswith("_acc") and "class" not in k), None)
        rows.append({"arm": t["bench.arm"], "fraction": float(t["bench.fraction"]), "epochs": int(t["bench.schedule"]),
                     "own_epochs": int(t["bench.epochs"]),
                     "seed": int(t["bench.seed"]), "clean": m.get("test_clean_acc"), "pgd": pgd,
                     "aa": m.get("test_autoattack_acc", m.get("evaluate_test_autoattack_acc")),
                     "aa_fast": m.get("test_autoattack_fast_acc"),
                     "wall": m.get("bench_wall_s"), "test_s": m.get("time_test_s"), "passes": m.get("passes_forward", 0) + m.get("passes_backward", 0),
                     "val": m.get("val_robust_acc"), "load": m.get("bench_load1_after"), "quiet": quiet(m, t),
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


def best_subset_arms(means: dict, epochs: int) -> list[str]:
    """The two subset arms with the best mean validation robust accuracy at fraction 0.3."""
    scored = sorted(((v["val"], arm) for (e, f, arm), v in means.items() if e == epochs and f == 0.3
                     and arm in SUBSET_ARMS), reverse=True)
    return [arm for _, arm in scored[:2]]


def write_results(out: Path, block: str, *, begin: str = BEGIN, end: str = END,
                  title: str = "# bench_quality results") -> None:
    """Put the generated ``block`` between the markers of ``out`` (the prose around them is kept),
    or write a new file that is only the block (under ``title``)."""
    text = out.read_text() if out.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        out.write_text(f"{head}{begin}\n{block}{end}{rest.split(end, 1)[1]}")
    elif text:  # a results file without this benchmark's block: it is added at the end
        out.write_text(f"{text.rstrip()}\n\n{begin}\n{block}{end}\n")
    else:
        out.write_text(f"{title}\n\n{begin}\n{block}{end}\n")



def plot(client, rows: list[dict], epochs: int, path: Path) -> None:
    """Validation robust accuracy against wall-clock time, mean over seeds, one line per arm."""
    import matplotlib.pyplot as plt

    from distributed_adcs.tracking.plots import curve_over_time, over_time_figure

    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["epochs"] == epochs:
            groups.setdefault(f"{r['arm']} {r['fraction']:g}", []).append(r)
    lines = []
    for label, rs in sorted(groups.items()):
        curves = [curve_over_time(client, r["run_id"], "val_robust_acc") for r in rs]
        n = min(len(c) for c in curves)  # the steps every seed has
        lines.append((label, [(statistics.mean(c[i][0] for c in curves), statistics.mean(c[i][1] for c in curves))
                              for i in range(n)]))
    fig = over_time_figure(lines, xlabel="training wall-clock time (min), mean over seeds",
                           ylabel="validation robust accuracy (PGD)", title=f"bench_quality, E = {epochs}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(client, s: Settings, out: Path, command: str) -> None:
    """Print the targets and the table, draw the plot, and write both into ``out``."""
    from common import host

    rows = rows_from_mlflow(client, s.experiment)
    table, means = summary(rows)
    verdict = targets(rows, means, s.epochs)
    png = out.with_name("results_quality.png")
    plot(client, rows, s.epochs, png)
    loads = [r["load"] for r in rows if r["load"] is not None]
    n_quiet = sum(r["quiet"] for r in rows)
    calm = (f"load average after the arms: median {statistics.median(loads):.2f}, max {max(loads):.2f}; wall times "
            f"and their speed-ups come from the {n_quiet} of {len(rows)} arms that ran alone (an arm that got "
            f">= {QUIET_SHARE:.0%} of its threads' CPU time, or, recorded before that was measured, a 1-minute "
            f"load average <= {QUIET_LOAD:g} before and after it); passes from every arm" if loads else "")
    print("\n".join(verdict))
    print(table)
    block = ("\n".join(verdict) + "\n\n"
             f"Command: `{command}` (n={s.n} Fashion-MNIST training images, E={s.epochs}, short {s.short}, "
             f"seeds {s.seeds}, {s.test} test images). Machine: {host()}. {calm}.\n\n{table}\n\n"
             f"![robust accuracy against time]({png.name})\n")
    write_results(out, block)
    print(f"results: {out}, {png}")


def probe_report(client, arm: Arm, s: Settings, png: Path) -> None:
    """Full AT's validation robust accuracy per epoch: where it stops rising sets --epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (run,) = [r for r in runs(client, s.experiment, arm.run_name(s.seeds[0])) if finished(r)][:1]
    hist = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_robust_acc"))
    best_step, best = max(hist, key=lambda sv: sv[1])
    plateau = next(step for step, v in hist if v >= best - 0.01)  # first epoch within 1 point of the best
    print("epoch val_robust_acc")
    for step, value in hist:
        print(f"{step + 1:5d} {value:.4f}")
    print(f"best {best:.4f} at epoch {best_step + 1}; within 1 point of it from epoch {plateau + 1} "
          f"(cosine schedule over {arm.epochs} epochs)")
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    ax.plot([step + 1 for step, _ in hist], [v for _, v in hist], "o-", ms=3)
    ax.axvline(plateau + 1, color="grey", ls="--", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation robust accuracy (PGD-10)")
    ax.set_title(f"full adversarial training, n={s.n}, cosine over {arm.epochs} epochs")
    ax.grid(alpha=0.3)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print(f"curve: {png}")
