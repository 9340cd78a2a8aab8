"""MLflow's system metrics for a job's run, sampled by MLflow's own monitor
(``mlflow.system_metrics``: CPU, memory, disk, network, and the GPUs NVML or ROCm answers for)
on a thread beside the training.

Who samples: the job's process when it trains in-process (``system/cpu_utilization_percentage``,
...); on Ray Train, one worker per Ray node (the first rank there), under the node's id
(``system/<node>/cpu_utilization_percentage``, MLflow's ``node_id``), so each node of the job
has its own series, and the run's ``adcs.node.<node>`` tag says which machine that is.

The monitor logs one averaged sample per ``mlflow.system_metrics_interval_s``; it drops the
samples of its last, unfinished interval, so one more sample is taken when the monitor stops:
a job shorter than one interval still records its machine once.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..config import MlflowConfig

# "Started monitoring system metrics." at INFO on every start: keep the CLI's stderr ours
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)

NODE_TAG = "adcs.node."  # + node id: the machine a node's system/<node>/... series come from


@dataclass(frozen=True)
class SystemMetrics:
    """Where and how often to record a run's system metrics (it pickles: a Ray Train worker gets it)."""

    uri: str  # tracking URI (absolute)
    run_id: str
    interval_s: float

    @classmethod
    def of(cls, cfg: MlflowConfig, uri: str, run_id: str) -> "SystemMetrics | None":
        """None when ``mlflow.system_metrics`` is off."""
        return cls(uri, run_id, cfg.system_metrics_interval_s) if cfg.system_metrics else None


@contextmanager
def system_metrics(spec: SystemMetrics | None, node_id: str | None = None, node: str | None = None) -> Iterator[None]:
    """Sample this machine into ``spec``'s run while the block runs (nothing when ``spec`` is None).

    Args:
        node_id: the series' node (``system/<node_id>/...``); None: one machine, no node level.
        node: what that node is (host, address), tagged ``adcs.node.<node_id>``.
    """
    if spec is None:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    log = logging.getLogger(__name__)
    try:  # a store that does not answer costs the job its system metrics, not the job
        # resume_logging: the steps go on after those of an earlier fit or process of the run
        monitor = SystemMetricsMonitor(spec.run_id, sampling_interval=spec.interval_s, resume_logging=True,
                                       node_id=node_id, tracking_uri=spec.uri)
        if node_id and node:
            monitor.mlflow_logger.client.set_tag(spec.run_id, NODE_TAG + node_id, node)
        monitor.start()
    except Exception as err:
        log.warning("system metrics: not recorded (%s)", err)
        yield
        return
    try:
        yield
    finally:
        monitor.finish()
        try:  # the last, unfinished interval (see the module's docstring)
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception as err:  # the run is gone or the server down: the job's outcome stands
            log.warning("system metrics: last sample not logged (%s)", err)
