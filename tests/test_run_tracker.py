"""RunTracker against a real sqlite store: what goes in comes back (tests/test_tracking_server.py
does the same through a tracking server)."""

from __future__ import annotations

import math

from distributed_adcs.tracking import RunTracker

# what MLflow 3.17 stores for +-inf: SQL has no infinity, so the largest float
BIGGEST = 1.7976931348623157e308


def check_non_finite_metrics_come_back(uri: str) -> None:
    """A diverging run's NaN and +-inf are logged (not dropped), and read back as MLflow stores them."""
    tracker = RunTracker(uri, "non-finite")
    tracker.start("diverging", {})
    tracker.log_metrics({"loss": 1.5, "nan_loss": float("nan"), "big": float("inf"), "small": float("-inf"),
                         "unmeasured": None}, step=0)
    tracker.log_metrics({"loss": float("nan")}, step=1)
    metrics = tracker.client.get_run(tracker.run_id).data.metrics
    assert set(metrics) == {"loss", "nan_loss", "big", "small"}  # None logs nothing
    assert math.isnan(metrics["nan_loss"]) and math.isnan(metrics["loss"])  # the latest step's value
    assert metrics["big"] == BIGGEST and metrics["small"] == -BIGGEST
    history = [(m.step, m.value) for m in tracker.client.get_metric_history(tracker.run_id, "loss")]
    assert sorted(history)[0] == (0, 1.5) and sorted(history)[1][0] == 1 and math.isnan(sorted(history)[1][1])


def test_nan_and_inf_metrics_come_back_from_sqlite(mlflow_uri):
    check_non_finite_metrics_come_back(mlflow_uri)


def test_log_history_batches_past_mlflows_limit(mlflow_uri):
    tracker = RunTracker(mlflow_uri, "history")
    tracker.start("long", {f"p{i}": i for i in range(250)})  # three batches of params
    tracker.log_history({"a": [(s, s / 10) for s in range(1500)], "b": [(0, 2.0)]})  # two batches of metrics
    client = tracker.client
    assert len(client.get_run(tracker.run_id).data.params) == 250
    history = sorted((m.step, m.value) for m in client.get_metric_history(tracker.run_id, "a"))
    assert history == [(s, s / 10) for s in range(1500)]
    assert client.get_run(tracker.run_id).data.metrics["b"] == 2.0


def test_a_ray_train_controller_handed_the_final_evaluation_twice_records_it_once(mlflow_uri, capsys):
    # Train may restart a worker group after its final report (seen in a clean clone's suite: its
    # placement group removed under the live worker); the restarted group evaluates the last
    # checkpoint again and reports it again: the run keeps one record of the test evaluation
    from types import SimpleNamespace

    from distributed_adcs.distributed.reporter import MlflowReporter
    from distributed_adcs.tracking.epochs import EpochRecorder

    tracker = RunTracker(mlflow_uri, "restarted")
    tracker.start("r", {})
    reporter = MlflowReporter(EpochRecorder(mlflow_uri, tracker.run_id, 10, epochs=2, tracker=tracker), "unused", "t")
    final = {"kind": "final", "epoch": 2, "test_clean_acc": 0.5, "time_test_s": 0.1, "state_digest": "d"}
    reporter.after_report(SimpleNamespace(), [final], None)
    reporter.after_report(SimpleNamespace(), [{**final, "time_test_s": 0.3, "state_digest": "e"}], None)
    for key, value in (("test_clean_acc", 0.5), ("time_test_s", 0.1)):
        assert [(m.step, m.value) for m in tracker.client.get_metric_history(tracker.run_id, key)] == [(2, value)]
    assert capsys.readouterr().out.count("test_clean_acc=0.5000") == 1
