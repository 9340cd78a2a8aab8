"""Typed config: unknown keys, wrong types and bad ranges fail early, naming the key."""

import re
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
    assert cfg.objective.name == "n_fgsm" and cfg.train.ema_decay == 0.99  # from the file


def test_required_keys_exist_with_meanings():
    flat = flatten(C.JobConfig())
    for key in ["data.name", "data.limit", "objective.name", "objective.epsilon", "train.epochs",
                "mlflow.tracking_uri", "mlflow.experiment", "seed", "coreset.method", "coreset.fraction",
                "coreset.every", "coreset.warmup_epochs", "coreset.per_class", "ray.num_workers",
                "ray.num_actors", "ray.use_gpu", "ray.address", "train.lr"]:
        assert key in flat, key
    assert flat["data.name"] == "fashion_mnist"
    trades = flatten(load_config(None, ["objective.name=trades"]))
    assert trades["objective.params.beta"] == 6.0  # a plug-in's own parameters, under its section


def test_every_shipped_config_loads():
    import glob

    files = sorted(glob.glob("configs/*.yaml"))
    assert files
    for f in files:
        if "sweep" not in f:
            load_config(f)


def test_names_are_the_registries():
    """The names the schema accepts are exactly the registered ones, and the code that builds an
    entry reads the same registry the config validates against (there is one per kind)."""
    from typing import get_args

    from distributed_adcs import data, models, objectives
    from distributed_adcs.embeddings import EMBEDDING_KINDS
    from distributed_adcs.specs.datasets import DATASETS
    from distributed_adcs.specs.models import MODELS
    from distributed_adcs.specs.objectives import OBJECTIVES

    assert (data.DATASETS, models.MODELS, objectives.OBJECTIVES) == (DATASETS, MODELS, OBJECTIVES)
    assert data.DATASETS is DATASETS and models.MODELS is MODELS and objectives.OBJECTIVES is OBJECTIVES
    for key, registry in [("data.name", DATASETS), ("model.name", MODELS), ("objective.name", OBJECTIVES)]:
        for name in registry:
            extra = ["eval.norm=linf", "eval.epsilon=0.1"] if name == "pat" else []
            assert flatten(load_config(None, [f"{key}={name}", *extra]))[key] == name
        with pytest.raises(ConfigError, match=rf"^{key}: must be one of {', '.join(registry)}; got 'nope'$"):
            load_config(None, [f"{key}=nope"])
    assert set(get_args(typing.get_type_hints(C.CoresetConfig)["embedding"])) == set(EMBEDDING_KINDS)


@pytest.mark.parametrize("overrides, key, fragment", [
    (["objective.beta=3"], "objective.beta", "moved to objective.params.beta"),
    (["objective.pat_lambda=3"], "objective.pat_lambda", "moved to objective.params.lam"),
    (["model.depth=34"], "model.depth", "moved to model.params.depth"),
    (["coreset.uniform_share=0.2"], "coreset.uniform_share", "moved to coreset.params.uniform_share"),
    (["data.image_column=img"], "data.image_column", "moved to data.params.image_column"),
    (["objective.params.beta=3"], "objective.params.beta", "unknown key (valid for pgd_linf: none)"),
    (["objective.name=trades", "objective.params.betta=3"], "objective.params.betta", "valid for trades: beta"),
    (["objective.name=trades", "objective.params.beta=-1"], "objective.params.beta", "must be >= 0"),
    (["objective.name=trades", "objective.params.beta=big"], "objective.params.beta", "must be a number"),
    (["objective.name=trades", "objective.params=3"], "objective.params", "must be a mapping"),
    (["model.name=wide_resnet", "model.params.depth=12"], "model.params.depth", "6n+4"),
    (["coreset.method=adaptive", "coreset.params.class_floor=2"], "coreset.params.class_floor", "[0, 1]"),
    (["coreset.method=craig", "coreset.params.uniform_share=0.2"], "coreset.params.uniform_share", "valid for craig"),
    (["data.name=parquet", "data.params.image_column=7"], "data.params.image_column", "must be a string"),
])
def test_plugin_params_are_checked_against_the_chosen_entry(overrides, key, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value).startswith(f"{key}: ") and fragment in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_plugin_params_load_and_round_trip():
    from distributed_adcs.methods import AdaptiveParams
    from distributed_adcs.specs.datasets import ParquetParams
    from distributed_adcs.specs.models import WideResNetParams
    from distributed_adcs.specs.objectives import TradesParams

    cfg = config_from_dict({"data": {"name": "parquet", "root": "x", "params": {"label_column": "y"}},
                            "model": {"name": "wide_resnet", "params": {"depth": 16}},
                            "objective": {"name": "trades", "params": {"beta": 3}},
                            "coreset": {"method": "adaptive", "params": {"uniform_share": 0.25}}})
    assert cfg.data.params == ParquetParams(label_column="y")
    assert cfg.model.params == WideResNetParams(depth=16, width=10)
    assert cfg.objective.params == TradesParams(beta=3.0) and isinstance(cfg.objective.params.beta, float)
    assert cfg.coreset.params == AdaptiveParams(uniform_share=0.25, class_floor=0.1)
    assert config_from_dict(C.to_dict(cfg)) == cfg  # what a checkpoint or a Ray payload carries
    assert load_config(None, ["objective.name=trades"]).objective.params == TradesParams()  # defaults
    # built in Python, a section holds the same rules: the entry's own params class, or its defaults
    assert C.ObjectiveConfig(name="trades").params == TradesParams()
    with pytest.raises(ConfigError, match="^params: must be TradesParams for trades, got WideResNetParams$"):
        C.ObjectiveConfig(name="trades", params=WideResNetParams())


def test_an_override_that_changes_the_entry_is_told_what_to_do_with_the_files_params():
    from distributed_adcs.specs.objectives import NFGSMParams, TradesParams

    raw = {"objective": {"name": "n_fgsm", "params": {"noise_mult": 1}}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, ["objective.name=pgd_linf"])
    assert str(err.value) == ("objective.params.noise_mult: unknown key (valid for pgd_linf: none); the "
                              "objective.params given stay when an override changes objective.name: set "
                              "objective.params=null too")
    with pytest.raises(ConfigError) as err:  # the entry unchanged: a typo, and no such advice
        config_from_dict(raw, ["objective.params.noise=1"])
    assert str(err.value) == "objective.params.noise: unknown key (valid for n_fgsm: noise_mult)"
    assert config_from_dict(raw, ["objective.name=pgd_linf", "objective.params=null"]).objective.name == "pgd_linf"
    # a section set to null takes keys again: the entry's defaults, then what is set
    cfg = config_from_dict(raw, ["objective.params=null", "objective.name=trades", "objective.params.beta=3"])
    assert cfg.objective.params == TradesParams(beta=3.0)
    assert config_from_dict(raw, ["objective.params=null"]).objective.params == NFGSMParams()


def test_check_overrides_walks_params_of_the_entry_it_names():
    C.check_overrides(["objective.name=trades", "objective.params.beta=2"])
    C.check_overrides(["objective.params.beta=2"])  # the checkpoint's objective decides, once it is read
    for overrides, fragment in [(["objective.name=pgd_l2", "objective.params.beta=2"], "valid for pgd_l2"),
                                (["objective.name=trades", "objective.params.beta=x"], "must be a number"),
                                (["objective.name=nope", "objective.params.beta=2"], "objective.name: must be one of"),
                                (["model.width=2"], "moved to model.params.width")]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            C.check_overrides(overrides)


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
