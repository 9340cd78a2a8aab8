"""The adcs CLI: help, exit codes and one-line errors, and a real tiny training run in MLflow."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from distributed_adcs.cli import main

from helpers import ROOT, run_adcs, tiny_args


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "evaluate", "data"):
        assert cmd in out
    for sub in (["train", "--help"], ["evaluate", "--help"], ["data", "export", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(sub)
        assert e.value.code == 0
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--resume" in capsys.readouterr().out


@pytest.mark.parametrize("args, fragment", [
    (["train", "--set", "objective.epsilon=8"], "objective.epsilon: an l-inf radius in pixel units must be in [0, 1]"),
    (["train", "--set", "objective.typo=1"], "objective.typo: unknown key"),
    (["train", "--config", "no/such.yaml"], "config file not found"),
    (["train", "--resume", "no-such-run-or-file"], "neither a checkpoint file nor a run"),
    (["train", "--set", "data.name=parquet", "--set", "data.root=/nonexistent"], "/nonexistent"),
    (["train", "--set", "data.limit=100000000"], "limit"),
    (["evaluate", "--checkpoint", "/nonexistent.pt"], "checkpoint not found"),
    (["data", "export", "--dataset", "imagenet", "--out", "/tmp/x"], "imagenet"),
])
def test_bad_input_exits_2_with_one_line(args, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written to the repository
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert fragment in err


def test_argparse_errors_exit_2():
    proc = run_adcs("train", "--bogus")
    assert proc.returncode == 2
    assert "unrecognized arguments" in proc.stderr


def test_train_two_epochs_tracked_in_mlflow(tmp_path, mlflow_uri):
    proc = run_adcs("train", "--config", "configs/quickstart.yaml", *tiny_args(tmp_path, mlflow_uri), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FINISHED" in proc.stdout and "adcs ui" in proc.stdout
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["objective.epsilon"] == "0.1" and run.data.params["data.name"] == "fashion_mnist"
    assert run.data.tags["adcs.method"] == "full" and run.data.tags["mlflow.runName"].startswith("fashion_mnist")
    for metric in ("train_loss", "val_clean_acc", "val_robust_acc", "epoch_time_s", "attack_time_s"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert sorted(m.step for m in history) == [0, 1], metric
    assert 0.0 <= run.data.metrics["test_clean_acc"] <= 1.0
    assert run.data.metrics["test_pgd3_acc"] <= run.data.metrics["test_clean_acc"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/last.pt"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "eval")] == ["eval/test_outcomes.json"]

    # evaluate the run's model back from MLflow, logging to the same run
    proc = run_adcs("evaluate", "--run", run.info.run_id, "--tracking-uri", mlflow_uri, "--set", "eval.pgd_steps=2",
                    "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test_clean_acc=" in proc.stdout
    clean = float(proc.stdout.split("test_clean_acc=")[1].split()[0])
    assert clean == pytest.approx(run.data.metrics["test_clean_acc"], abs=6e-5)  # same model and data (4 decimals)
    assert "evaluate_test_pgd2_acc" in client.get_run(run.info.run_id).data.metrics
    assert "eval/evaluate_pgd2_outcomes.json" in [a.path for a in client.list_artifacts(run.info.run_id, "eval")]
    # evaluating a run logs to it and creates no experiment of its own
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "quickstart"]
    proc = run_adcs("evaluate", "--run", "0123456789abcdef", "--tracking-uri", mlflow_uri, "--quiet")
    assert proc.returncode == 2 and f"run 0123456789abcdef not found in {mlflow_uri}" in proc.stderr


def test_crashed_run_is_failed_not_finished(tmp_path, mlflow_uri):
    # a real crash mid-job: the disk fills up (a file-size limit) when the first checkpoint
    # (1.2 MB) is written, after the run was created; the tiny store stays below the limit
    import resource

    limit = 1_150_000

    def full_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "distributed_adcs.cli", "train",
                           *tiny_args(tmp_path, mlflow_uri, "train.epochs=1"), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          preexec_fn=full_disk)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].endswith("last.pt.tmp: File too large"), proc.stderr[-3000:]
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("distributed_adcs").experiment_id])
    assert run.info.status == "FAILED"
    assert not list((tmp_path / "runs").rglob("last.pt*")), "a half-written checkpoint was left"


@pytest.mark.parametrize("method", ["craig", "gradmatch", "random"])
def test_train_with_each_coreset_method_logs_its_coresets(method, tmp_path, mlflow_uri):
    import pyarrow.parquet as pq

    proc = run_adcs("train", "--config", "configs/quickstart.yaml", "--quiet",
                    *tiny_args(tmp_path, mlflow_uri, f"coreset.method={method}", "coreset.fraction=0.25",
                               "train.epochs=3", "coreset.warmup_epochs=1", "coreset.every=1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["adcs.method"] == method
    paths = [a.path for a in client.list_artifacts(run.info.run_id, "coresets")]
    assert paths == ["coresets/coreset_epoch001.parquet", "coresets/coreset_epoch002.parquet"]
    table = pq.read_table(client.download_artifacts(run.info.run_id, paths[0], str(tmp_path))).to_pydict()
    assert len(table["index"]) == 96 == len(set(table["index"]))  # 25% of 384, no repeats
    assert set(table["epoch"]) == {1} and all(0 <= i < 60000 for i in table["index"])
    if method in ("craig", "random"):  # weights = examples represented
        assert sum(table["weight"]) == pytest.approx(384)
    assert all(w > 0 for w in table["weight"])
    for key in ("selection_attack_s", "selection_embed_s", "selection_greedy_s"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    # subset epochs train on the coreset only
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train_examples")] == [384, 96, 96]
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/accuracy.png", "plots/coreset_epoch001.png", "plots/coreset_epoch002.png"} <= plots


def test_a_locked_sqlite_store_tells_the_user_which_store_to_use():
    import sqlite3

    from distributed_adcs.cli import _hint

    hint = _hint(sqlite3.OperationalError("database is locked"))
    assert "MLflow server" in hint and "mlflow.tracking_uri=http" in hint
    assert _hint(RuntimeError("something else")) == ""
