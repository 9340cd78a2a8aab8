"""The outbox of a run's writes to a tracking server (tracking/outbox.py), on its own: writes that
wait while the server is down, delivered in order when it is back, the deadline, the one-line
failure, refused writes and file snapshots. The real server's outage: test_postgres_store.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from distributed_adcs.tracking import outbox as outbox_module
from distributed_adcs.tracking.outbox import Outbox, ServerUnreachable, transient


class Server:
    """What a write reaches: records what it takes while ``up``; a refused connection otherwise."""

    def __init__(self):
        self.up, self.taken, self.retries_env = True, [], []

    def write(self, what):
        def send(file: Path | None) -> None:
            self.retries_env.append(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
            if not self.up:
                raise ConnectionRefusedError(111, "Connection refused")
            self.taken.append(what if file is None else (what, file.read_text()))
        return send


class Refused(Exception):
    def get_http_status_code(self) -> int:
        return 400


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(outbox_module, "FIRST_WAIT_S", 0.05)
    monkeypatch.setattr(outbox_module, "MAX_WAIT_S", 0.1)


def _wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_writes_wait_while_the_server_is_down_and_arrive_in_order(capsys):
    server, box = Server(), Outbox("http://mlflow:5000", patience_s=60)
    box.send("a", server.write("a"))
    server.up = False
    started = time.monotonic()
    for name in "bcd":
        box.send(name, server.write(name))  # neither raises nor blocks
    assert time.monotonic() - started < 1 and box.waiting == 3 and server.taken == ["a"]
    server.up = True
    box.flush()
    assert server.taken == ["a", "b", "c", "d"] and box.waiting == 0
    box.send("e", server.write("e"))  # sent at once again
    assert server.taken[-1] == "e"
    # MLflow's own retries are off for every attempt; the outbox's backoff replaces them
    assert set(server.retries_env) == {"0"} and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    err = capsys.readouterr().err
    assert "MLflow tracking server http://mlflow:5000 does not answer" in err and "answers again" in err


def test_a_server_gone_longer_than_patience_fails_in_one_line_naming_it():
    server, box = Server(), Outbox("http://mlflow:5000", patience_s=0.5)
    server.up = False
    box.send("metrics of step 0", server.write(0))
    box.send("metrics of step 1", server.write(1))
    with pytest.raises(ServerUnreachable) as err:
        box.flush()
    assert str(err.value).startswith("MLflow tracking server http://mlflow:5000 did not answer for 0.5 s "
                                     "(mlflow.outage_s): 2 records of the run not delivered, the oldest metrics of step 0")
    assert "\n" not in str(err.value)
    with pytest.raises(ServerUnreachable):  # and every later write says so too
        box.send("x", server.write("x"))


def test_a_refused_write_raises_and_patience_zero_waits_for_nothing():
    box = Outbox("http://mlflow:5000", patience_s=60)

    def refused(_):
        raise Refused("INVALID_PARAMETER_VALUE")

    with pytest.raises(Refused):  # a 4xx is the write's own fault: at once, as without the outbox
        box.send("bad", refused)
    server, strict = Server(), Outbox("http://mlflow:5000", patience_s=0)
    server.up = False
    with pytest.raises(ConnectionRefusedError):
        strict.send("a", server.write("a"))


def test_a_waiting_artifact_sends_the_file_as_it_was_written(tmp_path):
    server, box = Server(), Outbox("http://mlflow:5000", patience_s=60)
    server.up = False
    ckpt = tmp_path / "last.pt"
    for epoch in range(3):  # the job replaces its checkpoint by rename every epoch
        (tmp_path / "last.pt.tmp").write_text(f"epoch {epoch}")
        os.replace(tmp_path / "last.pt.tmp", ckpt)
        box.send(f"checkpoint {epoch}", server.write(f"checkpoint {epoch}"), ckpt)
    ckpt.unlink()  # (Ray Train deletes old checkpoint directories)
    server.up = True
    box.flush()
    assert server.taken == [(f"checkpoint {e}", f"epoch {e}") for e in range(3)]


def test_transient_errors_are_those_that_pass():
    import requests
    from mlflow.exceptions import MlflowException, RestException

    assert transient(MlflowException("API request to http://x failed with exception Connection refused"))
    assert transient(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "m"}))
    assert not transient(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "m"}))
    assert not transient(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "m"}))
    response = requests.Response()
    response.status_code = 503
    assert transient(requests.HTTPError(response=response))
    response.status_code = 403
    assert not transient(requests.HTTPError(response=response))
    assert transient(requests.ConnectionError("refused")) and not transient(ValueError("bug"))
