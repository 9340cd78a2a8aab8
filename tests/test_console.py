"""What ``adcs train`` shows on the console, with a real local Ray: our lines and nothing else.

The console holds a header, one line per epoch, the final metrics and how to see the run.
Ray's, Ray Train's and the core workers' lines go to the run's log file (also the MLflow
artifact ``logs/adcs.log``); ``--verbose`` brings them back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import run_adcs, tiny_args

EPOCHS = 3
def job_lines(experiment: str, epochs: int) -> list[re.Pattern]:
    """The lines one training job may show (a sweep's trials show the same)."""
    return [
        re.compile(rf"^adcs train: .+; MLflow records run [0-9a-f]{{32}} \(experiment '{experiment}', sqlite:///.+\)$"),
        re.compile(rf"^epoch [1-{epochs}]/{epochs} loss=\S+ val_clean=\S+ val_robust=\S+ time=\S+s examples=\d+$"),
        re.compile(r"^test_clean_acc=\S+ test_pgd3_acc=\S+$"),
        re.compile(rf"^MLflow run [0-9a-f]{{32}} FINISHED in experiment '{experiment}' at sqlite:///\S+$"),
        re.compile(r"^  see it with: adcs ui .+$"),
        re.compile(r"^  (last|best) model: runs:/[0-9a-f]{32}/\w+( \(registered: models:/\S+/\d+\))?$"),
    ]


OURS = [  # every console line must be one of these
    *job_lines("quickstart", EPOCHS),
    re.compile(r"^  Ray's and Train's log: \S+adcs\.log \(artifact logs/adcs\.log\)$"),
]

SHAPES = {  # the two ways a job uses Ray: Train workers, and embedding actors beside this process
    "ray_train": ["ray.num_workers=1", "ray.cpus_per_worker=1", "coreset.method=craig", "coreset.warmup_epochs=1",
                  "coreset.every=1", "coreset.fraction=0.5"],
    "actors": ["ray.num_workers=0", "ray.num_actors=1", "ray.cpus_per_actor=1", "coreset.method=craig",
               "coreset.warmup_epochs=1", "coreset.every=1", "coreset.fraction=0.5"],
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_console_shows_our_lines_only(shape, tmp_path, mlflow_uri):
    proc = run_adcs("train", "--config", "configs/quickstart.yaml",
                    *tiny_args(tmp_path, mlflow_uri, f"train.epochs={EPOCHS}", *SHAPES[shape]))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    strays = [line for line in lines if not any(p.match(line) for p in OURS)]
    assert not strays, "lines that are not ours:\n" + "\n".join(strays[:20])
    assert not any("TrainingReport(" in line or "pid=" in line for line in lines)
    assert lines[0].startswith("adcs train: craig coreset (50%)")
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == [f"{i}/{EPOCHS}" for i in range(1, EPOCHS + 1)]  # one each, in order
    assert sum(line.startswith("test_clean_acc=") for line in lines) == 1

    # what was not shown is in the run's log, which MLflow also holds
    log = Path(re.search(r"log: (\S+adcs\.log)", proc.stdout).group(1))
    text = log.read_text()
    assert "Started a local Ray instance" in text  # Ray's own start-up lines went here
    if shape == "ray_train":
        assert "TrainingReport(" in text and "(TrainController pid=" in text
    # actors take the training set by a reference they fetch, so Ray has nothing to warn of
    assert "constructor arguments in the object store" not in text
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert log.parent.name == run.info.run_id
    assert [a.path for a in client.list_artifacts(run.info.run_id, "logs")] == ["logs/adcs.log"]


def test_verbose_shows_ray_on_the_console(tmp_path, mlflow_uri):
    """(On the lighter of the two shapes: what --verbose changes is what this process shows,
    Ray's lines as Ray prints them, the same capture for either.)"""
    proc = run_adcs("train", "--config", "configs/quickstart.yaml", "--verbose",
                    *tiny_args(tmp_path, mlflow_uri, "train.epochs=2", *SHAPES["actors"]))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    out = proc.stdout + proc.stderr
    assert "Started a local Ray instance" in out  # Ray's own lines, which a quiet job sends to its log
    assert "log:" not in proc.stdout  # nothing captured, so no log file to point at


def test_a_failed_job_is_one_line_and_its_log_has_the_traceback(tmp_path, mlflow_uri):
    # a fault that is not the user's input: the only Train worker dies and no restart is allowed
    marker = tmp_path / "killed"
    proc = run_adcs("train", "--config", "configs/quickstart.yaml",
                    *tiny_args(tmp_path, mlflow_uri, "train.epochs=2", "ray.max_failures=0", *SHAPES["ray_train"]),
                    env={"ADCS_FAULT_WORKER_EXIT_AT_EPOCH": f"1:{marker}"})
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("adcs train: failed: ") and "the traceback is in " in last, last
    log = Path(last.rsplit("the traceback is in ", 1)[1])
    assert "Traceback (most recent call last)" in log.read_text()
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert run.info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "logs")] == ["logs/adcs.log"]


def sweep_lines(trials: int, searched: str) -> list[re.Pattern]:
    """What ``adcs sweep`` may show: its trials' own lines, one line per trial, the summary
    (test_sweep.py's end-to-end sweep checks its console with these)."""
    return [
        *job_lines("sweeps", 3),
        re.compile(r"^  trial \w+: (\S+=\S+ ?)+: val_robust_acc=\S+ after \d+ epochs, (FINISHED|KILLED) "
                   r"\(MLflow run [0-9a-f]{32}\)$"),
        re.compile(rf"^sweep tiny: {trials} trials; MLflow parent run [0-9a-f]{{32}} at sqlite:///\S+$"),
        re.compile(rf"^sweep tiny: {trials} trials \({searched}\); Tune experiment (\S+) \(continue a killed sweep "
                   r"with: adcs sweep --resume \1\)$"),
    ]


def test_a_line_forwarded_twice_is_shown_once(capsys):
    """Ray forwards a worker's line once per log monitor that reads its file: nodes started on one
    machine share the session's log directory (tests/test_ray_jobs.py has such a cluster). A line
    the process printed again (a new N) is shown again."""
    from distributed_adcs import console

    batch = ["[adcs:epoch 1] epoch 1/2 loss=1.0000", "not ours", "[adcs 2] warning: w"]
    console.show_forwarded(batch, source=("10.0.0.1", 7))
    console.show_forwarded(batch[:2], source=("10.0.0.1", 7))  # the other monitor, its own batching
    console.show_forwarded([batch[2]], source=("10.0.0.1", 7))
    console.show_forwarded(["[adcs 3] warning: w"], source=("10.0.0.1", 7))  # printed again
    console.show_forwarded(["(EmbeddingActor pid=8) [adcs 2] warning: w"], source=("10.0.0.1", 8))  # another process
    assert capsys.readouterr().out.splitlines() == ["epoch 1/2 loss=1.0000", "warning: w", "warning: w", "warning: w"]


def test_capture_in_a_notebook_keeps_its_streams(tmp_path, monkeypatch):
    """A Jupyter kernel's sys.stdout is no file descriptor (it sends to the notebook): our lines go
    there, what is printed through sys.stdout or written to descriptors 1 and 2 goes to the log, and
    the kernel's streams are back afterwards."""
    import io
    import os
    import sys

    from distributed_adcs import console

    notebook_out, notebook_err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", notebook_out)
    monkeypatch.setattr(sys, "stderr", notebook_err)
    with console.capture(tmp_path) as log:
        console.say("epoch 1/1 ours")
        print("(TrainController pid=1) Ray's forwarded line")  # how Ray prints what it forwards
        os.write(2, b"a C++ core worker line\n")
        console.say("warning: ours too", err=True)
    assert sys.stdout is notebook_out and sys.stderr is notebook_err
    assert notebook_out.getvalue() == "epoch 1/1 ours\n" and notebook_err.getvalue() == "warning: ours too\n"
    text = log.read_text()
    assert "Ray's forwarded line" in text and "a C++ core worker line" in text and "epoch 1/1 ours" in text
