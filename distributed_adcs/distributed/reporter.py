"""Controller-side recording of a Ray Train job (runs in the Train controller, not in workers).

Each epoch rank 0 reports a checkpoint directory (``worker_sink.py``) that Ray Train has
already persisted to the job's storage. The reporter records the epoch with the job's
``EpochRecorder`` (``tracking/epochs.py``: coreset, checkpoint, metrics, then the job's epoch
hooks): it reads only the coreset file back, and records the checkpoint where Ray Train put
it, so the checkpoint is written once per epoch (plus the MLflow copy when the storage is a
directory of this machine). While the tracking server restarts, the records wait in the
recorder's outbox and the controller goes on; the final evaluation's report waits until they
are all delivered (``EpochRecorder.final``), so the job ends with its run whole.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from .. import storage
from ..tracking.epochs import CHECKPOINT_FILE, EpochRecorder

# MLflow (and the plots' matplotlib) load on the first report, not when the controller
# unpickles this callback: the controller starts the worker group only after that, so an
# import here is start-up time of every Ray Train job (about 0.9 s on 2 cores)


class MlflowReporter(UserCallback):
    """Records rank 0's epochs (coreset, checkpoint, metrics at ``step=epoch``) and the final
    evaluation in the job's run; ``storage``/``trainer``: the trainer's ``storage_path`` and name,
    under which its checkpoints are."""

    def __init__(self, recorder: EpochRecorder, storage_path: str, trainer: str):
        self.recorder, self.storage_path, self.trainer = recorder, storage_path, trainer

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        head = dict(metrics[0])
        kind, step = head.pop("kind", "epoch"), int(head.pop("epoch", 0))
        numeric = {k: v for k, v in head.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if kind == "final":
            if self.recorder.final_recorded:  # a restarted worker group's repeat (EpochRecorder.final)
                return
            digests = {str(rank): m.get("state_digest") for rank, m in enumerate(metrics)}
            self.recorder.tracker.log_json(digests, "ddp/final_state_digests.json")
            self.recorder.final(numeric, head.get("test_outcomes"))
            return
        where = storage.join(self.storage_path, self.trainer, Path(checkpoint.path).name)
        with tempfile.TemporaryDirectory() as tmp:
            coreset = None
            for found in storage.list_files(where, prefix="coreset_epoch", suffix=".parquet"):
                name = Path(found).name  # (a path of the storage's filesystem)
                coreset = storage.download(storage.join(where, name), Path(tmp) / name)
            self.recorder.record(step, numeric, coreset=coreset,
                                 checkpoint=lambda: storage.join(where, CHECKPOINT_FILE))
