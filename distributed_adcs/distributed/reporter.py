"""Controller-side MLflow logging for Ray Train (runs in the Train controller, not in workers)."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.train import UserCallback

if TYPE_CHECKING:
    from ..tracking import RunTracker

from ..console import say
from ..progress import epoch_line, final_line

# MLflow (and the plots' matplotlib) load on the first report, not when the controller
# unpickles this callback: the controller starts the worker group only after that, so an
# import here is start-up time of every Ray Train job (about 0.9 s on 2 cores)


class MlflowReporter(UserCallback):
    """Logs rank 0's per-epoch metrics (``step=epoch``), coresets and the final evaluation, and
    copies each epoch's ``last.pt`` to the run's MLflow artifacts and to ``checkpoint_uri`` (the
    run's remote directory, as the in-process loop does), so a resume finds it in either."""

    def __init__(self, tracking_uri: str, experiment: str, run_id: str, num_classes: int, epochs: int,
                 checkpoint_uri: str | None = None):
        self.tracking_uri, self.experiment, self.run_id = tracking_uri, experiment, run_id
        self.num_classes, self.epochs, self.checkpoint_uri = num_classes, epochs, checkpoint_uri
        self._tracker = None

    @property
    def tracker(self) -> "RunTracker":
        if self._tracker is None:
            from ..tracking import RunTracker

            self._tracker = RunTracker(self.tracking_uri, self.experiment, run_id=self.run_id)
        return self._tracker

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        head = dict(metrics[0])
        kind, step = head.pop("kind", "epoch"), int(head.pop("epoch", 0))
        numeric = {k: v for k, v in head.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        # the epoch's artifacts first, its metrics last: a run that holds an epoch's metrics holds
        # its coreset and checkpoint too, wherever the driver dies (a resume starts after that epoch)
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                for path in sorted(glob.glob(str(Path(d) / "coreset_epoch*.parquet"))):
                    from ..tracking.plots import log_coreset

                    log_coreset(self.tracker, path, self.num_classes)
                # the run's checkpoints/last.pt: what a resume on another node starts from
                last = Path(d) / "last.pt"
                if last.is_file():
                    if self.checkpoint_uri:
                        from .. import storage

                        storage.upload(last, storage.join(self.checkpoint_uri, "last.pt"))
                    self.tracker.log_artifact(last, "checkpoints")
        if kind == "final":
            digests = {str(rank): m.get("state_digest") for rank, m in enumerate(metrics)}
            self.tracker.log_json(digests, "ddp/final_state_digests.json")
        self.tracker.log_metrics(numeric, step=step)
        if kind == "epoch":
            say(epoch_line(step, self.epochs, numeric), epoch=True)
        else:
            say(final_line(numeric))
