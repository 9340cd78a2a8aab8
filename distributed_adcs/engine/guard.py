"""The catastrophic-overfitting guard: Wong, Rice & Kolter's rule ("Fast is better than free",
ICLR 2020, sec. 5), after every epoch (``guard:`` in the config, ``GuardConfig``).

Catastrophic overfitting is single-step training's known failure: within about one epoch, PGD
accuracy falls to near 0 while training accuracy on the single-step examples jumps. Wong et al.
check PGD accuracy on one fixed batch after each epoch and stop at a drop of more than 20
points. Here, after each epoch:

1. PGD-``pgd_steps`` on the first ``examples`` validation images (the same images every time,
   from a fixed seed, so two checks differ only by the model), on rank 0; every rank gets its
   verdict (``share_from_rank0``), so all of them restore together;
2. the check's robust accuracy drops by more than ``max_drop`` from the previous check's: the
   guard *fires*. It restores the state before the epoch (an in-memory copy of the previous
   epoch's checkpoint: model, optimiser, schedule, coreset, records and whatever else
   ``Job.payload`` carries), prints one line, and then, by ``fallback``:

   - ``pgd``: the objective becomes PGD-``fallback_steps`` in the objective's norm for the
     remaining epochs and the collapsed epoch is trained again (``run_epochs`` continues);
   - ``stop``: the collapsed epoch is recorded with the previous epoch's model, and the run ends.

   The epoch recorded next carries ``co_guard_fired = 1``, ``co_guard_collapsed_acc`` and
   ``co_guard_drop``; every checked epoch carries ``co_guard_robust_acc``.

The guard's state (the previous check, where it fired, whether it stopped) is in the checkpoint,
so a resumed run keeps its fallback (or stays stopped). After it has fired once, a second firing
stops the run: retraining the same epoch with the same fallback would collapse the same way.
Wall time and passes spent on a collapsed epoch stay counted: they were spent.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from ..config import eval_threat
from ..console import say
from ..accuracy import robust_mask
from ..specs.objectives import get_objective
from .build import make_objective
from .runtime import generator

if TYPE_CHECKING:
    from .job import Job

Verdict = Literal["keep", "retrain", "stop"]


class OverfitGuard:
    def __init__(self, job: Job) -> None:
        self.cfg = job.cfg.guard
        self.last_acc: float | None = None  # the previous check's robust accuracy
        self.fired_at: int | None = None  # the epoch whose check fired
        self.stopped = False
        self._snapshot: dict[str, Any] | None = None
        self._event: dict[str, float] = {}  # the firing, for the next recorded epoch

    # -- checkpoint ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"last_acc": self.last_acc, "fired_at": self.fired_at, "stopped": self.stopped,
                "event": dict(self._event)}

    def load_state_dict(self, state: dict[str, Any], job: Job) -> None:
        self.last_acc, self.stopped = state["last_acc"], bool(state["stopped"])
        self.fired_at = state["fired_at"]
        self._event = dict(state.get("event") or {})
        if self.fired_at is not None and self.cfg.fallback == "pgd":
            self.fall_back(job)

    def fall_back(self, job: Job) -> None:
        """The job trains with the fallback objective from now on (no boundary extra steps:
        they are a single-step objective's option)."""
        job.objective = self.fallback_objective(job)
        job.boundary = None

    def fallback_objective(self, job: Job):
        """PGD-``fallback_steps`` in the objective's norm, from a random start, Madry's step."""
        o = job.cfg.objective
        spec = replace(o, name=f"pgd_{get_objective(o.name).norm}", steps=self.cfg.fallback_steps,
                       step_size=None, random_start=True, params=None, boundary_share=0.0)
        return make_objective(spec)

    # -- the check -------------------------------------------------------------------------
    def start(self, job: Job) -> None:
        """Keep the state the first epoch of this (re)start begins from: its 'previous epoch'."""
        self._snapshot = copy.deepcopy(job.payload())

    def robust_accuracy(self, job: Job) -> float:
        """PGD accuracy on the fixed batch (rank 0; its passes count in the job's ``passes_*``)."""
        norm, eps = eval_threat(job.cfg)
        data = job.splits.val
        batches = job._batches(data, self.cfg.examples)
        robust = robust_mask(job.model, batches, norm=norm, epsilon=eps, steps=self.cfg.pgd_steps,
                             generator=generator(job.cfg.seed, "guard", device=job.device))
        return int(robust.sum()) / max(robust.numel(), 1)

    def after_epoch(self, job: Job, epoch: int, metrics: dict[str, float]) -> Verdict:
        """Check the epoch just trained. ``keep``: ``metrics`` gain the check's results; else the
        previous state is back and the caller retrains ``epoch`` or records it and stops."""
        acc = job.backend.share_from_rank0(self.robust_accuracy(job) if job.backend.rank == 0 else None)
        drop = None if self.last_acc is None else self.last_acc - acc
        if drop is None or drop <= self.cfg.max_drop:
            self.last_acc = acc
            metrics.update({"co_guard_robust_acc": acc, **self._event})
            self._event = {}
            self._snapshot = copy.deepcopy(job.payload())
            return "keep"
        again = self.fired_at is not None
        self._restore(job)
        self.fired_at = epoch
        self._event = {"co_guard_fired": 1.0, "co_guard_collapsed_acc": acc, "co_guard_drop": drop}
        stop = again or self.cfg.fallback == "stop"
        then = "stopping" if stop else f"training it again, and the rest, with PGD-{self.cfg.fallback_steps}"
        say(f"co_guard: epoch {epoch + 1}: PGD-{self.cfg.pgd_steps} accuracy on the guard batch fell from "
            f"{self.last_acc:.3f} to {acc:.3f}; restored the state before the epoch, {then}")
        if stop:
            self.stopped = True
            job.state.epoch = epoch + 1  # the collapsed epoch is spent: recorded, with the model before it
            metrics.update(self._event)
            self._event = {}
            return "stop"
        self.fall_back(job)
        return "retrain"

    def _restore(self, job: Job) -> None:
        """Back to the snapshot, except the cost accounting: the collapsed epoch's time and passes
        were spent."""
        s = job.state
        elapsed, split, passes = s.elapsed_s, dict(s.time_split), job.pass_counts()
        assert self._snapshot is not None  # taken before the epoch that collapsed
        job.restore(copy.deepcopy(self._snapshot))  # restore may alias its tensors (optimiser state)
        s.elapsed_s = elapsed
        s.time_split.update(split)
        job.set_pass_counts(passes)


def make_guard(job: Job) -> OverfitGuard | None:
    return OverfitGuard(job) if job.cfg.guard.enabled else None

