"""Run ``adcs`` commands in processes forked from one that has already imported torch, MLflow
and Ray: each command still gets a process of its own (its own session, working directory,
environment, file descriptors, resource limits and exit status), without the ~4 CPU-seconds
of imports that a fresh interpreter spends before it reaches the command's first check.

For tests of what a command does with bad input once it is past its configuration (the
configuration errors themselves must come before those imports, which only a fresh
interpreter shows: tests/test_bad_input.py runs those as plain subprocesses).

``python tests/forkserver.py`` is the server: it imports, checks that it has no thread (a fork
copies only the calling thread, so a lock held by another would stay held in the child), then
reads one JSON request a line and answers one JSON line when the command's process has ended.
:class:`ForkServer` is the test side.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRELOAD = ("torch", "torchvision", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "ray", "pyarrow.parquet",
           "torch._dynamo", "distributed_adcs.cli", "distributed_adcs.run")


class ForkServer:
    """The test side: ``run(argv, cwd=..., env=...)`` returns a ``CompletedProcess`` as
    ``subprocess.run([sys.executable, "-m", "distributed_adcs.cli", *argv], ...)`` would."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parent.parent)
        ready = self.proc.stdout.readline()
        assert ready.strip() == "ready", f"the fork server did not start: {ready!r}"

    def run(self, argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float,
            file_size_limit: int | None = None) -> subprocess.CompletedProcess:
        out, err = (Path(tempfile.mkstemp(prefix="adcs-forked-", suffix=f".{name}")[1]) for name in ("out", "err"))
        request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err),
                   "timeout": timeout, "file_size_limit": file_size_limit}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if answer["timed_out"]:
            raise subprocess.TimeoutExpired(argv, timeout)
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        out.unlink()
        err.unlink()
        return subprocess.CompletedProcess(argv, answer["returncode"], stdout, stderr)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _child(request: dict) -> None:
    """In the forked process: become the command's own process, run it as ``python -m`` would,
    end as the interpreter ends (threads joined, exit handlers run, streams flushed)."""
    code = 1
    try:
        os.setsid()
        if request["file_size_limit"]:
            limit = request["file_size_limit"]
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [request["cwd"], *extra, *[p for p in sys.path[1:] if p not in extra]]
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        sys.argv = ["adcs", *request["argv"]]
        import runpy

        try:
            runpy.run_module("distributed_adcs.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            if not isinstance(done.code, int) and done.code is not None:
                print(done.code, file=sys.stderr)
        except BaseException:  # what the interpreter does with an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
        import atexit
        import threading

        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> None:
    for name in PRELOAD:
        __import__(name)
    import threading

    assert threading.active_count() == 1, [t.name for t in threading.enumerate()]
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        deadline = time.monotonic() + request["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        timed_out = not done
        if timed_out:
            os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        returncode = None if timed_out else os.waitstatus_to_exitcode(status)
        print(json.dumps({"returncode": returncode, "timed_out": timed_out}), flush=True)


if __name__ == "__main__":
    main()
