"""Make a killed sweep's stored Tune state agree with itself before ``Tuner.restore`` reads it.

Tune writes its trial list (``experiment_state-*.json``) and then its search algorithm's state
into a staging directory, and a background thread copies both to the experiment directory. A
driver killed between the two writes, or during the copy, leaves a trial list that is one save
ahead of the search algorithm: restored, it proposes the trials it believes are missing while
Tune also resumes the ones in the list, and the sweep runs more than ``num_samples`` trials
(``tests/test_sweep_restore.py`` makes that shape; the 5 runs of 4 that CI saw came from the
other loss, trials created after the last save: ``sweep_lost``). Its set of live trials may
also hold a trial that the list has finished, which never reports again and holds its slot of
``max_concurrent_trials`` for ever.

:func:`reconcile_search_state` brings the search algorithm to the list:

- a model-based search (``search_gen_state-*.json``: Optuna, HyperOpt) gets the list's length
  as its count of proposed trials. A trial the model never saw runs once more without informing
  it (the concurrency limiter passes on only the completions of trials it knows), and may run
  beside one new proposal;
- Tune's basic generator (``basic-variant-state-*.json``: random and grid) draws the trials it
  missed, as it would have, without creating them, so that its next trial is the list's next
  one and not a second trial under the same id. One ahead of the list (the copy can land in
  either order) cannot be undone: that resume runs a trial fewer, and says so.

Either way the live trials keep only those the list has unfinished.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import ray.cloudpickle as cloudpickle

from .. import storage

TRIALS_FILE = "experiment_state-"  # Tune's trial list, one per driver session
SEARCH_FILE = "search_gen_state-"  # a model-based search's wrapper state (counter, limiter)
BASIC_FILE = "basic-variant-state-"  # Tune's basic generator's state (random, grid)
LIMITER = "name:ConcurrencyLimiter"
FINISHED = ("TERMINATED", "ERROR")


def reconcile_search_state(directory: str) -> tuple[int, int, int] | None:
    """Bring the stored search algorithm of the Tune experiment ``directory`` to its trial list;
    returns ``(trials it had proposed, trials in the list, trials that will not run for it)``
    when it changed anything, else None (also when there is no state yet)."""
    trials = listed_trials(directory)
    if trials is None:
        return None
    fs, _ = storage.filesystem(directory)
    unfinished = {trial_id for trial_id, status in trials if status not in FINISHED}
    for prefix, bring in ((SEARCH_FILE, _model_based), (BASIC_FILE, _basic)):
        files = storage.list_files(directory, prefix, ".json")
        if not files:
            continue
        with fs.open_input_stream(files[-1]) as f:
            state = cloudpickle.loads(f.readall())
        brought = bring(state, len(trials), unfinished)
        if brought is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "state"
            local.write_bytes(cloudpickle.dumps(state))
            storage.upload(local, storage.join(directory, Path(files[-1]).name))
        return brought[0], len(trials), brought[1]
    return None


def listed_trials(directory: str) -> list[tuple[str, str]] | None:
    """(trial id, status) of each trial in the newest stored trial list of the Tune experiment
    ``directory`` (the one ``Tuner.restore`` reads); None when it has none yet."""
    trials_files = storage.list_files(directory, TRIALS_FILE, ".json")
    if not trials_files:
        return None
    fs, _ = storage.filesystem(directory)
    with fs.open_input_stream(trials_files[-1]) as f:  # the newest, as Tune picks them: by name
        return [_trial(entry) for entry in json.loads(f.readall())["trial_data"]]


def _model_based(state: dict, listed: int, unfinished: set[str]) -> tuple[int, int] | None:
    """SearchGenerator's state: its counter set to ``listed``; the limiter's stale trials out.
    Returns (the count it had, 0 trials lost), or None when nothing needed changing."""
    limiter = state.get(LIMITER)
    stale = limiter is not None and not set(limiter["live_trials"]) <= unfinished
    if state["counter"] == listed and not stale:
        return None
    before = state["counter"]
    state["counter"] = listed
    if limiter is not None:
        limiter["live_trials"] = set(limiter["live_trials"]) & unfinished
        limiter["num_unfinished_live_trials"] = len(limiter["live_trials"])
    return before, 0


def _basic(state: dict, listed: int, unfinished: set[str]) -> tuple[int, int] | None:
    """BasicVariantGenerator's state: the trials it missed drawn (one experiment: its only
    trial iterator), its stale live trials out. Returns (the count it had, the trials it drew
    beyond the list, which will not run), or None when nothing needed changing."""
    iterators = state["_iterators"]
    live = set(state["_live_trials"])
    if len(iterators) != 1 or iterators[0].lazy_eval:
        return None  # not a shape adcs sweep makes (one experiment, a grid small enough to store)
    it = iterators[0]
    before = it.counter
    if before == listed and live <= unfinished:
        return None
    it.create_trial = lambda resolved_vars, spec: None  # draw as Tune does, create nothing
    try:
        for _ in range(listed - before):
            try:
                next(it)
            except StopIteration:
                break
            it.counter += 1  # (what create_trial does besides creating the trial)
    finally:
        del it.create_trial
    state["_live_trials"] = live & unfinished
    return before, max(0, before - listed)


def _trial(entry: list) -> tuple[str, str]:
    """(trial id, status) of one ``trial_data`` entry: Tune's JSON state of the trial (a JSON
    string) and its run metadata."""
    state = json.loads(entry[0])
    return state["trial_id"], state["status"]
