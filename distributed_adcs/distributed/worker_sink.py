"""What a Ray Train worker does with each epoch: ``engine.loop.run_epochs``' sink on a worker.

Rank 0 puts the epoch's checkpoint (``last.pt``) and coreset (``coreset_epochNNN.parquet``)
in one directory and reports it with the epoch's metrics; Ray Train persists that directory
to the job's ``storage_path`` (``epoch-NNN/`` under the trainer's name), which is the
checkpoint's one copy there, and the controller's ``MlflowReporter`` records the epoch in the
run (``tracking/epochs.py``: in what order). The other ranks report nothing but keep pace:
every rank must call ``ray.train.report`` as often as rank 0.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import ray
import ray.train

from ..engine.checkpoint import save_checkpoint
from ..coreset.table import write_selection
from ..tracking.epochs import CHECKPOINT_FILE, coreset_name

FAULT_ENV = "ADCS_FAULT_WORKER_EXIT_AT_EPOCH"  # tests: "EPOCH:MARKER" kills the last rank once, before EPOCH


def checkpoint_dir_name(epoch: int) -> str:
    """The directory of epoch ``epoch``'s checkpoint in the trainer's storage."""
    return f"epoch-{epoch:03d}"


class ReportSink:
    def __init__(self, rank: int, world_size: int, train, fault: str | None = None):
        self.rank, self.world_size, self.train, self.fault = rank, world_size, train, fault

    def epoch(self, epoch, metrics, selection, payload) -> None:
        if self.rank != 0:
            ray.train.report({"epoch": epoch, "kind": "epoch"}, checkpoint=None)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                if selection is not None:
                    write_selection(Path(tmp) / coreset_name(epoch), self.train, selection)
                save_checkpoint(Path(tmp) / CHECKPOINT_FILE, payload)
                ray.train.report({**metrics, "epoch": epoch, "kind": "epoch"},
                                 checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=checkpoint_dir_name(epoch))
        self._maybe_die(epoch + 1)

    def _maybe_die(self, epoch: int) -> None:
        """Tests (``FAULT_ENV``): the last rank dies once where epoch ``epoch`` would start."""
        if not self.fault:
            return
        at, marker = self.fault.split(":", 1)
        if int(at) == epoch and self.rank == self.world_size - 1 and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
