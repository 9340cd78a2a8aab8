"""A killed sweep whose stored Tune state disagrees with itself resumes with num_samples trials.

CI saw an Optuna sweep, killed after its second trial, run 5 trials of 4 when resumed: the stored
search algorithm had proposed one trial fewer than the stored trial list held (Tune saves the
two one after the other). Here real Tune experiments of 2 trials get that shape, for each kind
of search algorithm ``adcs sweep`` uses; restored as they are they go wrong, reconciled they run
no trial again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ray.cloudpickle as cloudpickle

from distributed_adcs.distributed.sweep_restore import reconcile_search_state


def _score(config: dict) -> dict:
    return {"score": config["x"]}


def _experiment(tmp_path: Path, search_alg) -> Path:
    from ray import tune

    tuner = tune.Tuner(_score, param_space={"x": tune.uniform(0, 1)},
                       tune_config=tune.TuneConfig(metric="score", mode="max", search_alg=search_alg, num_samples=2,
                                                   max_concurrent_trials=1),
                       run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0))
    assert len(tuner.fit()) == 2
    experiment = tmp_path / "exp"
    assert reconcile_search_state(str(experiment)) is None  # as Tune left it: consistent
    return experiment


def _edit(experiment: Path, pattern: str, edit) -> None:
    (path,) = experiment.glob(pattern)
    state = cloudpickle.loads(path.read_bytes())
    edit(state)
    path.write_bytes(cloudpickle.dumps(state))


def _restore(experiment: Path) -> list:
    from ray import tune

    return list(tune.Tuner.restore(str(experiment), _score, resume_unfinished=True).fit())


def test_an_optuna_count_one_save_behind_the_trial_list_is_set_to_it(tmp_path, ray_session):
    from ray.tune.search.optuna import OptunaSearch

    experiment = _experiment(tmp_path, OptunaSearch(seed=0))
    _edit(experiment, "search_gen_state-*.json", lambda state: state.update(counter=1))
    unreconciled = tmp_path / "unreconciled"
    shutil.copytree(experiment, unreconciled)
    assert len(_restore(unreconciled)) == 3  # the harm: a third trial of 2

    assert reconcile_search_state(str(experiment)) == (1, 2, 0)
    assert reconcile_search_state(str(experiment)) is None
    assert len(_restore(experiment)) == 2


def _one_behind(state: dict, live: set[str]) -> None:
    """Tune's basic generator as it stood when its first trial of 2 was drawn: one trial drawn,
    one sample left, ``live`` running."""
    (it,) = state["_iterators"]
    it.counter, it.num_samples_left = 1, 1
    state["_finished"] = False
    state["_live_trials"] = live


def test_a_random_search_one_save_behind_the_trial_list_draws_what_it_missed(tmp_path, ray_session):
    experiment = _experiment(tmp_path, None)
    (stored,) = experiment.glob("basic-variant-state-*.json")
    (it,) = cloudpickle.loads(stored.read_bytes())["_iterators"]
    assert (it.counter, it.num_samples_left) == (2, 0)  # as Tune left it
    _edit(experiment, "basic-variant-state-*.json", lambda state: _one_behind(state, set()))
    unreconciled = tmp_path / "unreconciled"
    shutil.copytree(experiment, unreconciled)
    results = _restore(unreconciled)  # the harm: a third trial, under the second one's id
    assert len(results) == 3 and len({_trial_id(r.path) for r in results}) == 2

    # and saved while the first trial ran: it is live there, finished in the list, and would hold
    # the only slot (max_concurrent_trials=1) for ever
    (trials_file,) = experiment.glob("experiment_state-*.json")
    first = min(json.loads(entry[0])["trial_id"] for entry in json.loads(trials_file.read_text())["trial_data"])
    _edit(experiment, "basic-variant-state-*.json", lambda state: _one_behind(state, {first}))
    assert reconcile_search_state(str(experiment)) == (1, 2, 0)
    assert reconcile_search_state(str(experiment)) is None
    (search_file,) = experiment.glob("basic-variant-state-*.json")
    assert cloudpickle.loads(search_file.read_bytes())["_live_trials"] == set()
    results = _restore(experiment)
    assert len(results) == 2 and len({_trial_id(r.path) for r in results}) == 2


def _trial_id(path: str) -> str:
    """The trial id in a Tune trial directory's name (``_score_<experiment>_<trial>_<tag>...``)."""
    return Path(path).name.split("_")[3]


def test_lost_runs_are_the_children_the_list_lacks_each_claimed_once(mlflow_uri):
    """``find_lost``: a child run whose trial Tune's list does not hold, keyed by its values;
    ``LostRuns``: each run to one claim, in order, for its values only."""
    from mlflow.tracking import MlflowClient

    from distributed_adcs.distributed.sweep_lost import LostRuns, find_lost
    from distributed_adcs.distributed.sweep_trial import TRIAL_TAG, VALUES_TAG, values_key

    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("sweeps")
    parent = client.create_run(exp).info.run_id
    twice = values_key({"train.lr": 0.05})

    def child(trial: str, values: str | None, parent_id: str = parent) -> str:
        tags = {"mlflow.parentRunId": parent_id, TRIAL_TAG: trial, **({VALUES_TAG: values} if values else {})}
        return client.create_run(exp, tags=tags).info.run_id

    child("listed", twice)  # in Tune's list: not lost
    first, second = child("lost1", twice), child("lost2", twice)
    other = child("lost3", values_key({"train.lr": 0.01}))
    child("untagged", None)  # a run of code from before the values tag: cannot be matched
    child("elsewhere", twice, parent_id=client.create_run(exp).info.run_id)  # another sweep's
    lost = find_lost(client, exp, parent, {"listed"})
    assert {k: sorted(v) for k, v in lost.items()} == {twice: sorted([first, second]),
                                                       values_key({"train.lr": 0.01}): [other]}
    assert values_key({"b": 1, "a": 0.5}) == values_key({"a": 0.5, "b": 1})  # one string for equal values
    runs = LostRuns(lost)
    assert [runs.claim(twice), runs.claim(twice), runs.claim(twice)] == [*lost[twice], None]
    assert runs.claim(values_key({"train.lr": 0.02})) is None and runs.unclaimed() == [other]
