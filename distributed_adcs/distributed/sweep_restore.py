"""Make a killed sweep's stored Tune state agree with itself before ``Tuner.restore`` reads it.

Tune writes its trial list (``experiment_state-*.json``) and then its searcher's state
(``search_gen_state-*.json``, with the count of trials the searcher has proposed) into a
staging directory, and a background thread copies both to the experiment directory. A driver
killed between the two writes, or during the copy, leaves a trial list that is one save ahead of
the searcher's count: restored, that searcher proposes the trials it believes are missing while
Tune also resumes the ones in the list, and the sweep runs more than ``num_samples`` trials
(seen in CI: 5 of 4). The reverse, a count ahead of the list, would run fewer.

:func:`reconcile_searcher_count` sets the count to the number of trials in the list, which is
what Tune resumes, so a resumed sweep proposes exactly ``num_samples`` minus that. The
concurrency limiter's live trials keep only those the list still has unfinished (a finished
trial never reports again, and would hold its slot for ever). A trial the model-based searcher
never saw runs once more without informing it (the limiter passes on only the completions of
trials it knows), and may run beside one new proposal.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import ray.cloudpickle as cloudpickle

from .. import storage

TRIALS_FILE = "experiment_state-"  # Tune's trial list, one per driver session
SEARCH_FILE = "search_gen_state-"  # a model-based search's wrapper state (counter, limiter)
LIMITER = "name:ConcurrencyLimiter"
FINISHED = ("TERMINATED", "ERROR")


def reconcile_searcher_count(directory: str) -> tuple[int, int] | None:
    """Set the stored searcher's trial count in the Tune experiment ``directory`` to its trial
    list's length; returns ``(count before, trials)`` when they differed, else None (also when
    the sweep has no model-based searcher, or no state yet)."""
    trials_files = storage.list_files(directory, TRIALS_FILE, ".json")
    search_files = storage.list_files(directory, SEARCH_FILE, ".json")
    if not trials_files or not search_files:
        return None
    fs, _ = storage.filesystem(directory)
    with fs.open_input_stream(trials_files[-1]) as f:  # the newest, as Tune picks them: by name
        trials = [_trial(entry) for entry in json.loads(f.readall())["trial_data"]]
    with fs.open_input_stream(search_files[-1]) as f:
        state = cloudpickle.loads(f.readall())
    unfinished = {trial_id for trial_id, status in trials if status not in FINISHED}
    limiter = state.get(LIMITER)
    stale = limiter is not None and not set(limiter["live_trials"]) <= unfinished
    if state["counter"] == len(trials) and not stale:
        return None
    before = state["counter"]
    state["counter"] = len(trials)
    if limiter is not None:
        limiter["live_trials"] = set(limiter["live_trials"]) & unfinished
        limiter["num_unfinished_live_trials"] = len(limiter["live_trials"])
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "state"
        local.write_bytes(cloudpickle.dumps(state))
        storage.upload(local, storage.join(directory, Path(search_files[-1]).name))
    return before, len(trials)


def _trial(entry: list) -> tuple[str, str]:
    """(trial id, status) of one ``trial_data`` entry: Tune's JSON state of the trial (a JSON
    string) and its run metadata."""
    state = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
    return state["trial_id"], state["status"]
