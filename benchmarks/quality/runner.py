"""Running the arms: each arm and seed runs, resumes or is skipped; a ``PAUSE`` file in the
store holds the next arm; every finished arm is written to the records at once."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from pathlib import Path
from typing import Callable

from .arms import Arm, arm_config, cost_units
from .records import PASSES, export_records, finished, runs
from .settings import Settings


def start_or_resume(cfg, resume: str | None, client) -> tuple[str, bool]:
    """Train ``cfg``, continuing the unfinished run ``resume`` when given; return the run id and
    whether it continued.

    A run that recorded no checkpoint (cut off in its first epoch) cannot continue: ``train``
    says so with ``NothingToResume``, raised for that case only. That run is marked FAILED and
    the arm starts afresh. Every other error propagates.
    """
    from distributed_adcs.run import train
    from distributed_adcs.tracking.job_run import NothingToResume

    if resume is not None:
        try:
            return train(cfg, resume=resume), True
        except NothingToResume:
            client.set_terminated(resume, status="FAILED")
    return train(cfg), False


def run_arm(arm: Arm, seed: int, s: Settings, client) -> str:
    """Run (or resume, or skip) one arm for one seed; return ``finished``, ``resumed`` or ``ran``."""
    from distributed_adcs.tracking import RunTracker

    key = arm.run_name(seed)
    previous = runs(client, s.experiment, key)  # newest first
    if any(finished(r) for r in previous):
        return "finished"
    resume = next((r.info.run_id for r in previous if r.info.status != "FINISHED"), None)
    cfg = arm_config(arm, seed, s)
    log = s.store / "logs" / f"{key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    with log.open("a") as out, contextlib.redirect_stdout(out):
        run_id, resumed = start_or_resume(cfg, resume, client)
    wall = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    import torch

    tracker = RunTracker(s.uri, None, run_id=run_id)
    tracker.set_tags({"bench.key": key, "bench.arm": arm.name, "bench.seed": seed, "bench.fraction": arm.fraction,
                      "bench.epochs": arm.epochs, "bench.schedule": arm.compared_at, "bench.headline": arm.headline,
                      "bench.resumed": resumed})
    # bench_cpu_share: the share of its threads' time the arm got; below report.QUIET_SHARE
    # something else ran beside it and its wall time is not used
    tracker.log_metrics({"bench_wall_s": wall, "bench_cpu_share": cpu / (wall * torch.get_num_threads()),
                         "bench_load1_before": load_before, "bench_load1_after": os.getloadavg()[0],
                         **run_passes(client, run_id)}, step=0)
    return "resumed" if resumed else "ran"


def run_passes(client, run_id: str) -> dict[str, float]:
    """The run's passes through the model as ``bench_passes_*``: its per-epoch cumulative
    counts, summed over the stretches where they grew. Every epoch adds passes, so a count that
    does not grow began again: before 2026-12-07 a checkpoint did not carry the counts, and a
    resumed run's restarted at zero (its first epoch can even equal the count before). Since, a
    resume goes on from its checkpoint's counts, and this is the last value."""
    out = {}
    for key in PASSES:
        values = [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        out[f"bench_{key}"] = sum(a for a, b in zip(values, values[1:]) if b <= a) + (values[-1] if values else 0.0)
    return out


def complete_passes(client, s: Settings) -> None:
    """Finished runs of this store that lack ``bench_passes_*`` (they ran before the runner
    logged them) get them from their history; their records are rewritten."""
    from mlflow.entities import Metric

    done = set()
    for r in runs(client, s.experiment):
        if finished(r) and "bench.imported" not in r.data.tags and "bench_passes_forward" not in r.data.metrics:
            client.log_batch(r.info.run_id, metrics=[Metric(k, v, int(time.time() * 1000), 0)
                                                     for k, v in run_passes(client, r.info.run_id).items()])
            done.add(r.data.tags["bench.key"])
    if done:
        export_records(client, s.experiment, s.records, rewrite=done)


def _cpu_s() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def wait_while_paused(store: Path) -> None:
    """Hold the next arm while ``store/PAUSE`` exists (tests or other work between arms)."""
    flag, said = store / "PAUSE", False
    while flag.exists():
        if not said:
            print(f"paused: {flag} exists; the next arm starts when it is removed", flush=True)
            said = True
        time.sleep(5)


def run_all(arms: list[Arm], s: Settings, client, cost: Callable[[Arm], float] | None = None,
            after: float = 0.0) -> None:
    """Every arm for every seed, seed-major (a run cut off early still has whole seeds of paired
    arms), one line each with an estimate of the time left from ``cost`` (an arm's relative
    training cost; default: bench_quality's, in full-data epochs) and ``after`` (the cost of
    what the caller runs after these, in the same units)."""
    cost = cost or (lambda a: cost_units(a, s.warmup))
    total = len(arms) * len(s.seeds)
    done, spent, units_done = 0, 0.0, 0.0
    pending = [(arm, seed) for seed in s.seeds for arm in arms]
    for i, (arm, seed) in enumerate(pending):
        wait_while_paused(s.store)
        t0 = time.perf_counter()
        what = run_arm(arm, seed, s, client)
        dt = time.perf_counter() - t0
        export_records(client, s.experiment, s.records)
        done += 1
        if what != "finished":
            spent += dt
            units_done += cost(arm)
        left = sum(cost(p) for p, _ in pending[i + 1:]) + after
        eta = f"{left * spent / units_done / 60:.0f} min left" if units_done else "time left: unknown yet"
        print(f"[{done}/{total}] {arm.key} seed {seed}: {what} in {dt:.0f} s; {eta}", flush=True)


def complete_headline(client, arms: list[Arm], s: Settings, version: str = "standard") -> None:
    """Finished runs of the headline ``arms`` that lack ``version``'s evaluation (the published
    AutoAttack, for arms that ran the fast one and became headline after they ran; or Square
    alone) get it from their checkpoint (``adcs evaluate --run``), logged to the run as
    ``evaluate_test_<name>_acc`` with its per-example outcomes; their records are rewritten.
    Runs imported from records have no checkpoint here and keep what they have."""
    from distributed_adcs.engine.job import AUTOATTACK_METRICS
    from distributed_adcs.evaluation import evaluate

    name = AUTOATTACK_METRICS[version]
    for arm in (arm for arm in arms if arm.headline):
        for seed in s.seeds:
            for r in runs(client, s.experiment, arm.run_name(seed)):
                m = r.data.metrics
                if (not finished(r) or f"test_{name}_acc" in m or f"evaluate_test_{name}_acc" in m
                        or "bench.imported" in r.data.tags):
                    continue
                t0 = time.perf_counter()
                log = s.store / "logs" / f"{arm.run_name(seed)}.log"
                with log.open("a") as out, contextlib.redirect_stdout(out):
                    evaluate(run_id=r.info.run_id, tracking_uri=s.uri,
                             overrides=["eval.autoattack=true", f"eval.autoattack_version={version}",
                                        "eval.keep_best=false",  # the last model only: what the table reports
                                        f"eval.autoattack_n={s.aa_n}", f"eval.test_limit={s.test}"])
                export_records(client, s.experiment, s.records, rewrite={arm.run_name(seed)})
                print(f"{arm.key} seed {seed}: {version} evaluation added in {time.perf_counter() - t0:.0f} s",
                      flush=True)
