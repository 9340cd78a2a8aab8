"""Finished arms as JSON records (committed), so that a benchmark spread over machines or
sessions skips what is done: ``export_records`` writes each finished arm once,
``import_records`` logs every record whose arm this store has not finished as a finished run
(tagged ``bench.imported``).

A record also carries the run's per-example test outcomes (the ``eval/*outcomes.json``
artifacts: ``tracking.epochs.OUTCOMES_ARTIFACT`` and what ``adcs evaluate`` added), which
paired intervals over test images need; an imported run gets them back as the same artifacts.
And it carries where the run came from (``tracking.provenance``: the commit and source it ran,
its training set's dataset input and digest), which the imported run keeps.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from distributed_adcs.tracking.epochs import OUTCOMES_DIR  # where a run's outcome artifacts are

HISTORIES = ("val_robust_acc", "wall_time_s")  # the curves the plot needs
PASSES = ("passes_forward", "passes_backward")  # the job's cumulative counts (runner.run_passes)


def runs(client, experiment: str, run_name: str | None = None) -> list:
    """The benchmark's runs, or those of one arm and seed (by run name, so that an arm cut off
    before it was tagged is found and resumed)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = f"attributes.run_name = '{run_name}'" if run_name else ""
    return client.search_runs([exp.experiment_id], filter_string=query, max_results=5000)


def finished(run) -> bool:
    """A finished arm: its run finished and was tagged as an arm (which happens after training)."""
    return run.info.status == "FINISHED" and "bench.key" in run.data.tags


def outcomes(client, run_id: str) -> dict[str, dict]:
    """The run's outcome artifacts by file name (``test_outcomes.json``, ``evaluate_*.json``)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small file otherwise
    names = [f.path for f in client.list_artifacts(run_id, OUTCOMES_DIR) if f.path.endswith("outcomes.json")]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out[Path(name).name] = json.loads(Path(client.download_artifacts(run_id, name, tmp)).read_text())
    return out


def export_records(client, experiment: str, records: Path, *, rewrite: set[str] = frozenset()) -> int:
    """Write every finished arm that has no record file yet (or whose key is in ``rewrite``);
    return how many were written."""
    from distributed_adcs.tracking.provenance import recorded

    records.mkdir(parents=True, exist_ok=True)
    written = 0
    for r in runs(client, experiment):
        key = r.data.tags.get("bench.key")
        path = records / f"{key}.json"
        if not finished(r) or (path.exists() and key not in rewrite) or "bench.imported" in r.data.tags:
            continue
        history = {name: [[m.step, m.value] for m in sorted(client.get_metric_history(r.info.run_id, name),
                                                             key=lambda m: m.step)] for name in HISTORIES}
        tags = {k: v for k, v in r.data.tags.items() if k.startswith("bench.") and k != "bench.imported"}
        path.write_text(json.dumps({"key": key, "run_id": r.info.run_id, "tags": tags, "metrics": r.data.metrics,
                                    "params": r.data.params, "history": history, "provenance": recorded(r),
                                    "outcomes": outcomes(client, r.info.run_id)}, indent=1, sort_keys=True) + "\n")
        written += 1
    return written


def import_records(client, uri: str, experiment: str, records: Path) -> int:
    """Log every record file whose arm has no finished run in this store as a finished run;
    return how many were imported."""
    from distributed_adcs.tracking import RunTracker
    from distributed_adcs.tracking.provenance import restore

    imported = 0
    for path in sorted(records.glob("*.json")) if records.is_dir() else []:
        rec = json.loads(path.read_text())
        if "key" not in rec or any(finished(r) for r in runs(client, experiment, rec["key"])):
            continue  # (not an arm's record, or already here)
        tracker = RunTracker(uri, experiment)
        tracker.start(rec["key"], rec.get("params", {}),
                      tags={**rec["tags"], "bench.imported": rec["run_id"], "bench.record": path.name})
        restore(client, tracker.open_run_id, rec.get("provenance", {}))  # (records before it have none)
        # final values at step 0, the curves at their steps
        finals = {k: [(0, v)] for k, v in rec["metrics"].items() if k not in rec["history"]}
        tracker.log_history({**finals, **{name: [(step, v) for step, v in points]
                                          for name, points in rec["history"].items()}})
        for name, value in rec.get("outcomes", {}).items():
            tracker.log_json(value, f"{OUTCOMES_DIR}/{name}")
        tracker.finish("FINISHED")
        imported += 1
    return imported
