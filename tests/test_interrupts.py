"""Ctrl-C or SIGTERM in every phase of ``adcs train`` (both where the phase has Ray processes), with a real
local Ray where the phase has one.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group (here: the job and
every process it started); a scheduler or ``kill`` sends SIGTERM to the job's process only.
Whichever, and whenever it comes, the job must end with:

- one line naming the signal, the run and how to continue it; exit 128 + the signal; no traceback;
- the MLflow run marked KILLED, with no metric of the epoch (or evaluation) that was cut off;
- no Ray process of the job left running;
- its last checkpoint intact: ``--resume`` finishes the run, every epoch recorded once (once per
  phase: see ``RESUMED``).

The signal goes out when the job prints the line of the epoch before the phase (the job's
own output is the only clock a user has too); each phase is sized to last several seconds
after that line, and the checks above show that it was cut off inside the phase.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from helpers import ROOT, run_adcs, tiny_args

# phase: (overrides, the epoch line after which the signal goes, what must not be recorded)
PHASES = {
    "warmup": (["coreset.method=craig", "coreset.warmup_epochs=2", "coreset.every=1", "coreset.fraction=0.5",
                "train.epochs=3", "data.limit=4096", "objective.steps=5"], "epoch 1/3", "train_loss@1"),
    "selection_on_actors": (["ray.num_actors=1", "ray.cpus_per_actor=1", "coreset.method=craig",
                             "coreset.warmup_epochs=1", "coreset.every=1", "coreset.fraction=0.5",
                             "coreset.selection_steps=20", "data.limit=4096", "train.epochs=2"],
                            "epoch 1/2", "selection_total_s@1"),
    "training_on_workers": (["ray.num_workers=1", "ray.cpus_per_worker=1", "train.epochs=2", "data.limit=4096",
                             "objective.steps=5"], "epoch 1/2", "train_loss@1"),
    "final_evaluation": (["train.epochs=1", "eval.pgd_steps=100", "eval.test_limit=2000"], "epoch 1/1",
                         "test_clean_acc@1"),
}
SIGNALS = {"SIGINT": (signal.SIGINT, "interrupted (SIGINT)"), "SIGTERM": (signal.SIGTERM, "terminated (SIGTERM)")}


@pytest.fixture
def ray_dir():
    # Ray's sockets live under its temp dir: a short path (the socket path limit is 107 bytes)
    path = Path(tempfile.mkdtemp(prefix="adcs-int-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _job_processes(pgid: int, ray_dir: Path) -> list[psutil.Process]:
    """Processes of the job's group, or of the Ray it started (their command lines name its temp dir)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getpgid(p.pid) == pgid or str(ray_dir) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except (psutil.Error, ProcessLookupError):
            pass
    return found


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# Both signals where the job has Ray processes of its own (Ctrl-C reaches them too, SIGTERM only
# the job); one each where the phase runs in the job's process alone, where the two take the same path
CASES = [("warmup", "SIGTERM"), ("selection_on_actors", "SIGINT"), ("selection_on_actors", "SIGTERM"),
         ("training_on_workers", "SIGINT"), ("training_on_workers", "SIGTERM"), ("final_evaluation", "SIGINT")]
# The resume runs once per phase, after SIGINT where both signals are sent. The signal comes after
# the line of the epoch whose checkpoint the resume starts from (the line is printed once that
# checkpoint is recorded), and Ctrl-C reaches every process of the job, Ray's included, where
# SIGTERM reaches the job's process only: the SIGINT case is the harder test of "its last
# checkpoint intact", and the resume after it covers the other. (A resume is a whole second job,
# about 50 CPU-seconds with Ray.)
RESUMED = {("warmup", "SIGTERM"), ("selection_on_actors", "SIGINT"), ("training_on_workers", "SIGINT"),
           ("final_evaluation", "SIGINT")}


@pytest.mark.parametrize("phase,signame", CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_a_signal_in_each_phase_kills_the_run_cleanly_and_it_resumes(phase, signame, tmp_path, mlflow_uri, ray_dir):
    overrides, after_line, not_recorded = PHASES[phase]
    signum, said = SIGNALS[signame]
    env = {**os.environ, "RAY_TMPDIR": str(ray_dir), "PYTHONUNBUFFERED": "1"}
    args = ["train", "--config", "configs/quickstart.yaml", *tiny_args(tmp_path, mlflow_uri, *overrides)]
    job = subprocess.Popen([sys.executable, "-m", "distributed_adcs.cli", *args], cwd=ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           start_new_session=True,  # its own group, as a job started from a shell is
                           # with Ctrl-C's default action, as a shell's foreground job has it (a suite started
                           # in the background, nohup or `cmd &`, hands its children SIGINT ignored)
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = []
        for line in job.stdout:
            seen.append(line)
            if line.startswith(after_line):
                break
        assert seen and seen[-1].startswith(after_line), "".join(seen)[-2000:] + job.stderr.read()[-2000:]
        signalled = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            job.send_signal(signal.SIGTERM)  # what a scheduler (or kill PID) does
        out, err = job.communicate(timeout=120)
        stopped_s = time.monotonic() - signalled
        _, alive = psutil.wait_procs(_job_processes(job.pid, ray_dir), timeout=15)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(10)
        leftovers = _job_processes(job.pid, ray_dir)
        for p in leftovers:
            p.kill()

    assert job.returncode == 128 + signum, (job.returncode, err[-3000:])
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"adcs train: {said}: MLflow run ") and "--resume " in last, last
    assert not alive and not leftovers, f"left running after {signame}: {[p.pid for p in alive + leftovers]}"
    assert stopped_s < 60, f"{stopped_s:.0f} s from the signal to the exit"

    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert run.info.status == "KILLED"
    key, step = not_recorded.split("@")
    assert int(step) not in _steps(client, run.info.run_id, key), f"{phase} had finished: {key} at step {step}"
    assert 0 in _steps(client, run.info.run_id, "train_loss"), "the epoch before the phase is recorded"

    if (phase, signame) not in RESUMED:
        return
    # the same command with --resume: it finishes from the last checkpoint, each epoch recorded once
    quick = ["--set", "eval.pgd_steps=3", "--set", "eval.test_limit=128"]  # the test evaluation is not the point here
    resumed = run_adcs(*args, *quick, "--resume", run.info.run_id, env={"RAY_TMPDIR": str(ray_dir)})
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert run.info.status == "FINISHED"
    epochs = int(next(o for o in overrides if o.startswith("train.epochs=")).split("=")[1])
    assert _steps(client, run.info.run_id, "train_loss") == list(range(epochs))
    assert _steps(client, run.info.run_id, "test_clean_acc") == [epochs]
