"""Bytes a job writes into its bucket per epoch, by what they are, against a baseline tree.

    .venv/bin/python benchmarks/bench_checkpoint_bytes.py [--baseline-ref COMMIT]

The cluster's shape on one machine, as tests/test_s3.py builds it: a real S3 server (moto, on
loopback) standing for the bucket every node reaches, ``train.output_dir=s3://...`` (so Ray
Train's ``storage_path`` is there too) and an MLflow server whose proxied artifacts are in the
same bucket. The job: configs/quickstart.yaml on 384 Fashion-MNIST images, 3 epochs of CRAIG
(selections at epochs 1 and 2), once in-process and once on one Ray Train worker. moto records
every request it serves; the table sums the bodies of the writes (PUT, POST) by what their
key is: the checkpoint (``last.pt``, wherever it is), the coresets, and everything else (Ray
Train's bookkeeping, MLflow's config, plots and logs). ``--baseline-ref`` runs that commit
(``git archive``, ``PYTHONPATH`` pointing at it) in the same session.

The bytes per epoch scale with the checkpoint: model and optimiser state, about 2x the
parameters in fp32 for SGD with momentum (WRN-34-10: 46.2M parameters, about 370 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from common import header, table  # noqa: E402
from helpers import TINY, free_port, mlflow_server  # noqa: E402

BUCKET = "adcs-bytes"
EPOCHS = 3
JOB = [*TINY, f"train.epochs={EPOCHS}", "coreset.method=craig", "coreset.warmup_epochs=1", "coreset.every=1"]
PATHS = {"in-process": ["ray.num_workers=0"], "Ray Train (1 worker)": ["ray.num_workers=1", "ray.cpus_per_worker=1"]}


def _moto(recording: Path) -> tuple[subprocess.Popen, dict]:
    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": "adcs", "AWS_SECRET_ACCESS_KEY": "adcs", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "MOTO_ENABLE_RECORDING": "1", "MOTO_RECORDER_FILEPATH": str(recording)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(env["AWS_ENDPOINT_URL"], timeout=2).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if time.time() > deadline:
                raise RuntimeError("moto did not start") from None
            time.sleep(0.2)
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="adcs",
                 aws_secret_access_key="adcs").create_bucket(Bucket=BUCKET)
    return proc, env


def _written(recording: Path) -> dict[str, int]:
    """Bytes of the writes moto served, by kind of key, and the largest body of one checkpoint
    write (a whole checkpoint: pyarrow and boto3 send small files in one PUT or one part)."""
    out = {"checkpoint": 0, "coresets": 0, "other": 0, "checkpoint_size": 0}
    for line in recording.read_text().splitlines() if recording.exists() else []:
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        if entry["method"] not in ("PUT", "POST") or "x-amz-copy-source" in headers:
            continue  # (a server-side copy moves no bytes from a client)
        size = int(headers.get("x-amz-decoded-content-length") or headers.get("content-length") or 0)
        key = entry["url"].split("?", 1)[0]
        kind = "checkpoint" if "last.pt" in key else "coresets" if "coreset_epoch" in key else "other"
        out[kind] += size
        if kind == "checkpoint":
            out["checkpoint_size"] = max(out["checkpoint_size"], size)
    return out


def _job(code: Path, env: dict, url: str, output: str, where: list[str], work: Path) -> None:
    sets = [*JOB, *where, f"mlflow.tracking_uri={url}", f"train.output_dir={output}"]
    done = subprocess.run([sys.executable, "-m", "distributed_adcs.cli", "train", "--config",
                           str(ROOT / "configs" / "quickstart.yaml"), "--quiet", *[a for s in sets for a in ("--set", s)]],
                          cwd=work, env={**os.environ, **env, "PYTHONPATH": str(code)}, capture_output=True, text=True,
                          timeout=1200, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])


def measure(code: Path, label: str, tmp: Path) -> list[dict]:
    rows = []
    for name, where in PATHS.items():
        run_dir = Path(tempfile.mkdtemp(dir=tmp))
        recording = run_dir / "moto.jsonl"
        moto, env = _moto(recording)
        try:
            with mlflow_server(run_dir, f"s3://{BUCKET}/mlflow", env=env) as url:
                _job(code, env, url, f"s3://{BUCKET}/runs", where, run_dir)
        finally:
            moto.terminate()
            moto.wait(30)
        w = _written(recording)
        rows.append({"tree": label, "path": name, "checkpoint_size": w["checkpoint_size"],
                     "checkpoint_bytes_per_epoch": round(w["checkpoint"] / EPOCHS),
                     "checkpoints_per_epoch": round(w["checkpoint"] / EPOCHS / max(w["checkpoint_size"], 1), 2),
                     "coreset_bytes_per_epoch": round(w["coresets"] / EPOCHS),
                     "other_bytes_per_epoch": round(w["other"] / EPOCHS)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", help="a commit to measure in the same session")
    args = parser.parse_args()
    print(header("bytes written into the bucket per epoch (tiny CRAIG job, 3 epochs, S3 via moto)", 1))
    rows = []
    with tempfile.TemporaryDirectory(prefix="adcs-bytes-") as tmp:
        if args.baseline_ref:
            base = Path(tmp) / "baseline"
            base.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_ref, "distributed_adcs"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            rows += measure(base, f"baseline {args.baseline_ref[:10]}", Path(tmp))
        rows += measure(ROOT, "this checkout", Path(tmp))
    print(table(rows, ["tree", "path", "checkpoint_size", "checkpoints_per_epoch", "checkpoint_bytes_per_epoch",
                       "coreset_bytes_per_epoch", "other_bytes_per_epoch"]))


if __name__ == "__main__":
    main()
