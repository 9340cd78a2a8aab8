"""The ``selection:`` section: its keys decide the coreset on every path, so they are not Ray's;
the keys they moved from fail with one line that names the new key, wherever they are written."""

from __future__ import annotations

import pytest
import yaml

from distributed_adcs.config import ConfigError, RayConfig, SelectionConfig, check_overrides, load_config
from distributed_adcs.sweep_config import load_sweep

from helpers import ROOT

MOVED = ["num_shards", "merge", "merge_memory_gb", "greedi_oversample"]
VALUES = {"num_shards": 2, "merge": "exact", "merge_memory_gb": 1.0, "greedi_oversample": 3.0}


def test_defaults_and_checks_as_before_the_move():
    s = SelectionConfig()
    assert (s.num_shards, s.merge, s.merge_memory_gb, s.greedi_oversample) == (4, "auto", 4.0, 2.0)
    assert not set(MOVED) & set(RayConfig.__dataclass_fields__)  # ray: keeps placement and resources
    for override, fragment in [("selection.num_shards=0", "must be >= 1"), ("selection.merge_memory_gb=0", "must be > 0"),
                               ("selection.greedi_oversample=0.5", "must be >= 1"), ("selection.merge=greedy", "must be one of")]:
        with pytest.raises(ConfigError, match=rf"^{override.split('=')[0]}: {fragment}"):
            load_config(None, [override])
    with pytest.raises(ConfigError, match=r"^selection.merge: two_round merging selects examples"):
        load_config(None, ["coreset.method=craig", "coreset.per_batch=true", "selection.merge=two_round"])
    cfg = load_config(None, [f"selection.{k}={v}" for k, v in VALUES.items()])
    assert [getattr(cfg.selection, k) for k in MOVED] == list(VALUES.values())


@pytest.mark.parametrize("key", MOVED)
def test_old_key_names_the_new_one_in_yaml_overrides_and_sweeps(key, tmp_path):
    message = rf"ray.{key}: moved to selection.{key}$"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"ray": {"num_workers": 0, key: VALUES[key]}}))
    with pytest.raises(ConfigError, match=rf"^{message}"):
        load_config(path)
    with pytest.raises(ConfigError, match=rf"^{message}"):
        load_config(None, [f"ray.{key}={VALUES[key]}"])
    with pytest.raises(ConfigError, match=rf"^{message}"):
        check_overrides([f"ray.{key}={VALUES[key]}"])  # adcs evaluate's overrides
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": str(ROOT / "configs" / "quickstart.yaml"),
                                     "search": {f"ray.{key}": {"grid": [VALUES[key]]}}}))
    with pytest.raises(ConfigError, match=rf"^search.ray.{key}: {message}"):
        load_sweep(sweep)
