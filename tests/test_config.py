"""Typed config: unknown keys, wrong types and bad ranges fail early, naming the key."""

import typing

import pytest

from distributed_adcs import config as C
from distributed_adcs.config import ConfigError, config_from_dict, flatten, load_config


@pytest.mark.parametrize("override, key, fragment", [
    ("objective.epsilonn=0.1", "objective.epsilonn", "unknown key"),
    ("nonsense=1", "nonsense", "unknown key"),
    ("objective.epsilon=8", "objective.epsilon", "must be in [0, 1]"),
    ("train.epochs=abc", "train.epochs", "must be an integer"),
    ("train.epochs=0", "train.epochs", "must be >= 1"),
    ("data.limit=1.5", "data.limit", "must be an integer"),
    ("data.download=yes please", "data.download", "must be true or false"),
    ("coreset.method=kmeans", "coreset.method", "must be one of"),
    ("coreset.fraction=0", "coreset.fraction", "must be in (0, 1]"),
    ("train.milestones=[0.8, 0.2]", "train.milestones", "increasing"),
    ("ray.num_workers=-1", "ray.num_workers", ">= 0"),
    ("seed=-3", "seed", ">= 0"),
    ("data=3", "data", "mapping"),
])
def test_bad_values_name_the_key(override, key, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert message.startswith(f"{key}: "), message
    assert fragment in message
    assert "\n" not in message


def test_cross_field_checks():
    with pytest.raises(ConfigError, match=r"^coreset.warmup_epochs: must be < train.epochs"):
        load_config(None, ["coreset.method=craig", "coreset.warmup_epochs=5", "train.epochs=5"])
    with pytest.raises(ConfigError, match=r"^eval.norm: objective pat needs"):
        load_config(None, ["objective.name=pat"])
    load_config(None, ["objective.name=pat", "eval.norm=linf", "eval.epsilon=0.1"])


def test_exponent_notation_is_a_number():
    assert load_config(None, ["train.lr=1e-6"]).train.lr == 1e-6  # YAML 1.1 alone reads a string
    assert load_config(None, ["objective.epsilon=3.1e-2"]).objective.epsilon == 0.031
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(None, ["train.lr=1e-6x"])


def test_overrides_and_types():
    cfg = load_config("configs/quickstart.yaml", ["train.epochs=3", "objective.epsilon=1", "data.limit=null"])
    assert cfg.train.epochs == 3
    assert isinstance(cfg.objective.epsilon, float) and cfg.objective.epsilon == 1.0
    assert cfg.data.limit is None
    assert cfg.coreset.method == "craig"  # from the file


def test_required_keys_exist_with_meanings():
    flat = flatten(C.JobConfig())
    for key in ["data.name", "data.limit", "objective.name", "objective.epsilon", "train.epochs",
                "mlflow.tracking_uri", "mlflow.experiment", "seed", "coreset.method", "coreset.fraction",
                "coreset.every", "coreset.warmup_epochs", "coreset.per_class", "ray.num_workers",
                "ray.num_actors", "ray.use_gpu", "ray.address", "train.lr", "objective.beta"]:
        assert key in flat, key
    assert flat["data.name"] == "fashion_mnist"


def test_every_shipped_config_loads():
    import glob

    files = sorted(glob.glob("configs/*.yaml"))
    assert files
    for f in files:
        if "sweep" not in f:
            load_config(f)


def test_literals_match_registries():
    """The names the schema accepts are exactly the registered ones."""
    from typing import get_args

    from distributed_adcs.data import DATASETS
    from distributed_adcs.embeddings import EMBEDDING_KINDS
    from distributed_adcs.models import MODELS
    from distributed_adcs.objectives import OBJECTIVES

    assert set(get_args(C.DatasetName)) == set(DATASETS)
    assert set(get_args(C.ModelName)) == set(MODELS)
    assert set(get_args(C.ObjectiveName)) == set(OBJECTIVES)
    assert set(get_args(typing.get_type_hints(C.CoresetConfig)["embedding"])) == set(EMBEDDING_KINDS)


def test_coreset_method_is_checked_against_the_method_registry():
    from distributed_adcs.methods import METHODS

    for name in METHODS:
        assert load_config(None, [f"coreset.method={name}"]).coreset.method == name
    with pytest.raises(ConfigError, match="coreset.method: must be one of full, random, craig, gradmatch"):
        load_config(None, ["coreset.method=kmeans"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    assert config_from_dict({"train": {"epochs": 2}}).train.epochs == 2
