"""The dependency pins say what was tested: pyproject.toml's ranges admit the versions of
constraints.txt (the lock file that `make setup`, the benchmarks and the cluster set-ups install
with), and this environment, which `make test` builds with that lock, runs exactly those versions."""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import ROOT


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = version
    return pins


def _requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    extras = [r for reqs in project["optional-dependencies"].values() for r in reqs]
    reqs = [Requirement(r) for r in project["dependencies"] + extras]
    # an extra may name another of this project's extras (dev installs distributed_adcs[sweep])
    return [r for r in reqs if canonicalize_name(r.name) != canonicalize_name(project["name"])]


def test_every_dependency_is_locked_inside_its_range():
    locked = _locked()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is a dependency but constraints.txt does not pin it (run scripts/lock.sh)"
        assert req.specifier.contains(locked[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={locked[name]}, outside pyproject.toml's {req.specifier}"


def test_core_ranges_have_floors_and_ceilings():
    for raw in _pyproject()["project"]["dependencies"]:
        req = Requirement(raw)
        ops = {spec.operator for spec in req.specifier}
        assert ops & {">=", "==", "~="} and ops & {"<", "<=", "==", "~="}, f"{raw}: a floor and a ceiling, both tested"
    python = _pyproject()["project"]["requires-python"]
    assert re.fullmatch(r">=3\.\d+,<3\.\d+", python), python
    assert Requirement(f"python{python}").specifier.contains(".".join(map(str, sys.version_info[:3])))


def test_this_environment_runs_the_locked_versions():
    locked = _locked()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
    for req in _requirements():
        name = canonicalize_name(req.name)
        if name in installed:  # an extra this environment did not install (bench) is absent
            assert installed[name] == locked[name], \
                f"{req.name} {installed[name]} is installed, constraints.txt pins {locked[name]}"
