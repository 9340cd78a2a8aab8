"""A killed sweep whose stored Tune state disagrees with itself resumes with num_samples trials."""

from __future__ import annotations

import shutil

import ray.cloudpickle as cloudpickle

from distributed_adcs.distributed.sweep_restore import reconcile_searcher_count


def _score(config: dict) -> dict:
    return {"score": config["x"]}


def test_a_searcher_count_one_save_behind_the_trial_list_is_set_to_it(tmp_path, ray_session):
    """CI saw an Optuna sweep, killed after its second trial, run 5 trials of 4 when resumed: the
    stored searcher had counted one trial fewer than the stored trial list held. Here a real
    Tune experiment of 2 Optuna trials gets that shape (its count set to 1). Restored as it is,
    it runs a third trial; reconciled, it runs none."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    tuner = tune.Tuner(_score, param_space={"x": tune.uniform(0, 1)},
                       tune_config=tune.TuneConfig(metric="score", mode="max", search_alg=OptunaSearch(seed=0),
                                                   num_samples=2, max_concurrent_trials=1),
                       run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0))
    assert len(tuner.fit()) == 2
    experiment = tmp_path / "exp"
    assert reconcile_searcher_count(str(experiment)) is None  # as Tune left it: consistent
    (search_file,) = experiment.glob("search_gen_state-*.json")
    state = cloudpickle.loads(search_file.read_bytes())
    assert state["counter"] == 2
    state["counter"] = 1
    search_file.write_bytes(cloudpickle.dumps(state))
    unreconciled = tmp_path / "unreconciled"
    shutil.copytree(experiment, unreconciled)

    assert len(tune.Tuner.restore(str(unreconciled), _score, resume_unfinished=True).fit()) == 3  # the harm
    assert reconcile_searcher_count(str(experiment)) == (1, 2)
    assert reconcile_searcher_count(str(experiment)) is None
    assert len(tune.Tuner.restore(str(experiment), _score, resume_unfinished=True).fit()) == 2
