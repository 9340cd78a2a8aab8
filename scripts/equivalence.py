"""Same seed, same results: run the quickstart at data.limit=2048 (Ray Train, 1 worker) and a
2-worker DDP run, and dump their coresets (index, weight) and every non-timing metric history
to JSON, so that two commits can be compared exactly.

    git clone -q . /tmp/old && git -C /tmp/old checkout OLD && ln -s $PWD/.venv /tmp/old/.venv
    PYTHONPATH=/tmp/old .venv/bin/python scripts/equivalence.py /tmp/eq/old /tmp/old
    .venv/bin/python scripts/equivalence.py /tmp/eq/new .
    .venv/bin/python scripts/equivalence.py --compare /tmp/eq/old /tmp/eq/new

Each pair of runs takes about 3 minutes on 2 quiet cores.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

TIMING = ("time", "_s", "wall", "startup")  # metric names that hold clocks, not results
RUNS = {"quickstart": [],
        "ddp": ["ray.num_workers=2", "ray.cpus_per_worker=1", "train.epochs=5", "data.limit=1024"]}


def run(out: Path, repo: Path, name: str, extra: list[str]) -> None:
    from mlflow import MlflowClient
    import pyarrow.parquet as pq

    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{d}/mlflow.db"
    sets = ["data.limit=2048", f"mlflow.tracking_uri={uri}", f"train.output_dir={d}/runs", "mlflow.experiment=eq", *extra]
    cmd = [str(repo / ".venv/bin/adcs"), "train", "--quiet", "--config", str(repo / "configs/quickstart.yaml")]
    subprocess.run(cmd + [a for s in sets for a in ("--set", s)], check=True, cwd=d)
    client = MlflowClient(uri)
    (r,) = client.search_runs([client.get_experiment_by_name("eq").experiment_id])
    metrics = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(r.info.run_id, k), key=lambda m: m.step)]
               for k in sorted(r.data.metrics) if not any(t in k for t in TIMING)}
    cores, tmp = {}, tempfile.mkdtemp()
    for a in client.list_artifacts(r.info.run_id, "coresets"):
        if a.path.endswith(".parquet"):
            table = pq.read_table(client.download_artifacts(r.info.run_id, a.path, tmp)).to_pydict()
            cores[a.path] = {k: table[k] for k in ("index", "weight")}
    (out / f"{name}.json").write_text(json.dumps({"metrics": metrics, "coresets": cores}))


def compare(old: Path, new: Path) -> int:
    bad = 0
    for name in RUNS:
        a, b = (json.loads((p / f"{name}.json").read_text()) for p in (old, new))
        common = sorted(set(a["metrics"]) & set(b["metrics"]))
        differ = [k for k in common if a["metrics"][k] != b["metrics"][k]]
        same = a["coresets"] == b["coresets"]
        print(f"{name}: coresets equal {same}; {len(common)} common metrics, differing: {differ or 'none'}; "
              f"new: {sorted(set(b['metrics']) - set(a['metrics'])) or 'none'}; "
              f"gone: {sorted(set(a['metrics']) - set(b['metrics'])) or 'none'}")
        bad += bool(differ) or not same
    return int(bad > 0)


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    out, repo = Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else ".").resolve()
    for name, extra in RUNS.items():
        run(out, repo, name, extra)
