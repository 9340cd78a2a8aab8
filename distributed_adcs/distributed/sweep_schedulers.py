"""``adcs sweep``'s Tune search spaces and schedulers (ASHA, FIFO, PBT), built from its config."""

from __future__ import annotations

from functools import partial

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler

from ..sweep_config import SweepConfig, max_epochs, within_search
from .sweep_trial import PBT_CLOCK

# a search kind -> its Tune sampler
SAMPLERS = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}


def make_scheduler(sweep: SweepConfig, base: dict) -> TrialScheduler:
    """The sweep's Tune scheduler: ASHA, FIFO or PBT."""
    if sweep.scheduler == "asha":
        # max_t one past the longest trial's epochs: a trial at its last epoch still has its final
        # evaluation to run, which ASHA must not cut off
        return ASHAScheduler(time_attr="training_iteration", max_t=max_epochs(sweep, base) + 1,
                             grace_period=sweep.grace_period, reduction_factor=sweep.reduction_factor)
    if sweep.scheduler == "fifo":
        return FIFOScheduler()
    # a list is shifted one place (or redrawn), a range multiplied by 0.8 or 1.2 (or redrawn), then
    # clipped to its bounds; synchronous, so that a trial takes a donor's checkpoint of its own epoch
    # and its run records every epoch once (each trial restarts at each perturbation)
    spaces = {key: values if kind in ("grid", "choice") else SAMPLERS[kind](values)
              for key in sweep.pbt.mutate for kind, values in sweep.search[key].items()}
    return PopulationBasedTraining(time_attr=PBT_CLOCK, perturbation_interval=sweep.pbt.perturbation_interval,
                                   hyperparam_mutations={"params": spaces}, synch=True,
                                   quantile_fraction=sweep.pbt.quantile_fraction,
                                   resample_probability=sweep.pbt.resample_probability,
                                   custom_explore_fn=partial(within_search, search=sweep.search))
