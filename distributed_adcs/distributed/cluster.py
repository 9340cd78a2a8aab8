"""Connecting to Ray: a local instance sized to the machine, or an existing cluster."""

from __future__ import annotations

import os

import ray

from ..config import JobConfig, UsageError
from .. import console
from ..engine.runtime import signal_handlers_kept
from .local_env import use_local_ray_env
from .resources import job_bundles, total


def attach_console() -> None:
    """After ``ray.init(log_to_driver=True)`` in a driver whose console is captured: our marked
    lines from Ray's processes go to the console. Ray itself keeps printing every forwarded line
    to file descriptors 1 and 2, which are then the job's log. (Ray's handler registry is not a
    public API; tests/test_console.py fails if it changes.)"""
    if not console.capturing():
        return
    from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher

    def route(data: dict) -> None:
        console.show_forwarded(data.get("lines", ()), err=bool(data.get("is_err")),
                               source=(data.get("ip"), data.get("pid")))

    dispatcher.remove_handler("adcs_console")  # one per process, however often Ray starts
    dispatcher.add_handler("adcs_console", route)


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) address must answer before Ray is asked to join
    it: ``ray.init`` would otherwise retry for a minute and end in a traceback."""
    import socket

    host_port = address.removeprefix("ray://")
    if address == "auto" or "://" in host_port or ":" not in host_port:
        return
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise UsageError(f"ray.address {address}: no Ray cluster answers there ({reason})") from None


def connect(job: JobConfig, resources: dict[str, float] | None = None) -> bool:
    """Make sure Ray is up; return True when this call started (or joined) it.

    ``ray.address`` (or, inside a Ray job, the ``RAY_ADDRESS`` it sets) joins a cluster. With
    neither, a local instance starts with the dashboard on 127.0.0.1 (the State API it serves
    is what lets Train V2 clean up placement groups). Its logical CPU count is the machine's,
    raised to what the job asks for when that is more (a deliberate oversubscription:
    ``cpus_per_worker: 4`` on a 2-core laptop runs, slower); ``resources`` adds custom ones.
    """
    cfg = job.ray
    if ray.is_initialized():
        return False
    # inside a submitted Ray job RAY_ADDRESS names the cluster: join it, never start a private Ray
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_address(address)
        try:
            with signal_handlers_kept():  # see below
                ray.init(address=address, log_to_driver=True)
        except ConnectionError as err:
            raise UsageError(f"ray.address {address}: {str(err).splitlines()[0]}") from None
        attach_console()
        return True
    num_cpus = max(os.cpu_count() or 1, int(-(-total(job_bundles(job)).get("CPU", 0.0) // 1)))
    use_local_ray_env()  # (local_env.py: worker priority, no idle or watcher processes)
    # ray.init replaces the process's SIGTERM handler with its own (sys.exit, and the core worker's
    # stack-dump handler that ends in SIGABRT): the process keeps its own, so that under `adcs` a
    # SIGTERM marks the run KILLED like Ctrl-C (engine.runtime.raise_on_sigterm), and a notebook
    # calling the API keeps whatever it had
    with signal_handlers_kept():
        ray.init(address="local", num_cpus=num_cpus, resources=resources, include_dashboard=True,
                 dashboard_host="127.0.0.1", log_to_driver=True)
    attach_console()  # our lines from Ray's processes to the console, the rest to the job's log
    return True
