"""The sweep's trials bar: k/N trials ended, and tqdm's estimate of the time left.

A Ray Tune callback in the sweep's driver. It counts the trials that ended from Tune's own
list at every step, so a resumed sweep (whose callbacks come back from Tune's stored state)
starts at the k trials that ended before it was killed.
"""

from __future__ import annotations

from ray.tune import Callback
from ray.tune.experiment import Trial

from .. import console

ENDED = (Trial.TERMINATED, Trial.ERROR)


class TrialsBar(Callback):
    def __init__(self, total: int, name: str):
        self.total, self.name = total, name
        self._open = False

    def __getstate__(self) -> dict:  # Tune stores its callbacks with the experiment: no open bar
        return {"total": self.total, "name": self.name, "_open": False}

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        done, total = sum(t.status in ENDED for t in trials), max(self.total, len(trials))
        if not self._open:
            self._open = console.open_bar(total, f"sweep {self.name}", "trial", initial=done)
        console.set_bar(done, total)

    def on_experiment_end(self, trials: list, **info) -> None:
        if self._open:
            console.close_bar()
            self._open = False
