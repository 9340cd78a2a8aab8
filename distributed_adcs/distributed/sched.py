"""CPU scheduling of a local Ray, so that its control plane does not preempt training.

Every Ray worker process wakes its main thread every 10 ms (Ray's hard-coded signal check),
and a Ray Train job adds about six helper actors to the raylet, GCS and dashboard. On the
2-core machine this repository is tested on, those ~1,000 wake-ups a second preempted each of
the worker's two compute threads ~550 times a second (``nonvoluntary_ctxt_switches``; the same
epoch in-process: ~25 a second), and every preemption stalls the other OpenMP thread at its next
barrier. A Ray Train epoch took 1.25-1.50x the in-process one; renicing Ray's processes to 19
did not help, pausing them did.

With ``ray.batch_scheduling: true``, Linux's ``SCHED_BATCH`` policy addresses the preemptions: a batch task keeps its full fair share
of CPU time, but its wake-ups do not preempt a running task; it runs at the next scheduler tick
or on an idle core. So the processes of a local Ray started by ``adcs`` (daemons, helper actors,
workers: all inherit the policy from the thread that calls ``ray.init``) run as batch, and each
thread that trains switches itself back to the normal policy (``SCHED_OTHER``), as do the OpenMP
threads it starts afterwards. Switching between these two policies needs no privilege. Measured
(benchmarks/bench_ray_train.py): preemptions halve, but the epoch time did not measurably
improve (1.18x vs 1.19x, then 1.19x vs 1.14x without), hence off by default (docs/measurements.md). Elsewhere (macOS, or a cluster ``adcs`` only joins) nothing changes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_SUPPORTED = all(hasattr(os, name) for name in ("sched_setscheduler", "sched_getscheduler", "SCHED_BATCH",
                                                "SCHED_OTHER"))


def _set_policy(policy: int) -> bool:
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))  # 0: the calling thread
    except OSError:  # e.g. a seccomp profile that forbids it: keep the default
        return False
    return True


@contextlib.contextmanager
def batch_children(enabled: bool = True) -> Iterator[bool]:
    """Processes started inside the block inherit ``SCHED_BATCH``; yields whether it applies."""
    if not (enabled and _SUPPORTED):
        yield False
        return
    before = os.sched_getscheduler(0)
    changed = before != os.SCHED_BATCH and _set_policy(os.SCHED_BATCH)
    try:
        yield changed or before == os.SCHED_BATCH
    finally:
        if changed:
            _set_policy(before)


def compute_thread() -> bool:
    """Give the calling thread, and threads it starts from now on, the normal policy.

    Called first thing by every training loop; a no-op unless the thread is batch-scheduled.
    Returns whether the policy changed.
    """
    if not _SUPPORTED or os.sched_getscheduler(0) != os.SCHED_BATCH:
        return False
    return _set_policy(os.SCHED_OTHER)


@contextlib.contextmanager
def compute_section() -> Iterator[None]:
    """The normal policy for the block, then batch again: for actors that compute now and then
    (embedding actors) and should not preempt training the rest of the time."""
    changed = compute_thread()
    try:
        yield
    finally:
        if changed:
            _set_policy(os.SCHED_BATCH)


def thread_policy(tid: int = 0) -> str:
    """``"batch"``, ``"other"`` or ``"unknown"``: for logs and tests."""
    if not _SUPPORTED:
        return "unknown"
    policy = os.sched_getscheduler(tid)
    return {os.SCHED_BATCH: "batch", os.SCHED_OTHER: "other"}.get(policy, str(policy))
