"""The runs of trials that a killed sweep's Tune lost, taken up by the trials that replay them.

Tune saves its trial list, and with it its search algorithm's state, at most every 10 s
(``TUNE_GLOBAL_CHECKPOINT_S``). A driver killed between two saves loses the trials created
since the last one: their MLflow runs (cut off, or finished where trials are short) are
children of the sweep that the restored list does not hold. The restored search algorithm,
its random state as it was at that save, proposes the same values again under new trial ids;
without more, the sweep would train those values twice and end with more than ``num_samples``
runs (seen in CI: 5 finished runs of 4).

At ``adcs sweep --resume`` the driver finds those lost runs (:func:`find_lost`: a child run
whose trial the list does not hold, keyed by the values it was proposed with, its
``VALUES_TAG``) and hands them to a :class:`LostRuns` actor. A new trial whose values match
claims one (the actor serves claims one at a time: two trials of equal values never take the
same run) and continues it as its own (``sweep_trial``): a finished run is reported as it
stands, a cut-off one continues from its last checkpoint. A lost run that no trial proposes
again is left as it is, and the driver names it.
"""

from __future__ import annotations

import ray

from .sweep_trial import TRIAL_TAG, VALUES_TAG


def find_lost(client, experiment_id: str, parent_run_id: str, listed: set[str]) -> dict[str, list[str]]:
    """The child runs of ``parent_run_id`` whose trial is not in ``listed`` (the trial ids of
    Tune's stored list), as {their values' key: run ids, oldest first}."""
    query = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    lost: dict[str, list[str]] = {}
    runs = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"])
    for run in runs:
        tags = run.data.tags
        if tags.get(TRIAL_TAG) not in listed and VALUES_TAG in tags:
            lost.setdefault(tags[VALUES_TAG], []).append(run.info.run_id)
    return lost


class LostRuns:
    """The lost runs of a resumed sweep, each handed to the first trial that asks for its values."""

    def __init__(self, lost: dict[str, list[str]]):
        self._lost = {key: list(runs) for key, runs in lost.items()}

    def claim(self, key: str) -> str | None:
        runs = self._lost.get(key)
        return runs.pop(0) if runs else None

    def unclaimed(self) -> list[str]:
        return [run for runs in self._lost.values() for run in runs]


LostRunsActor = ray.remote(num_cpus=0)(LostRuns)
