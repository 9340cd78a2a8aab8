"""The docs say what the code does: every ``--set`` shown is accepted, every command shown
exists, every test named exists, every config key in the README's table is a real key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distributed_adcs.config import flatten, load_config

from helpers import ROOT, run_adcs

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "cluster").glob("*.md")),
        *sorted((ROOT / "configs").glob("*.yaml")), *sorted((ROOT / "cluster").glob("*.yaml"))]
PLACEHOLDERS = {"KEY=VALUE", "dotted.key=value"}  # the syntax itself, not an example


def _text(path: Path) -> str:
    return path.read_text()


ASSIGN = r"--set[ =]([A-Za-z_][\w.]*=[^\s`'\"\]\)]*)"


def _set_examples() -> list[tuple[str, tuple[str, ...]]]:
    """Every ``--set`` shown, as the overrides of one command: the flags that follow each other
    (``--set objective.name=pgd_linf --set objective.params=null``) go together."""
    found = []
    for path in DOCS:
        for run in re.finditer(rf"(?:{ASSIGN}[ \t]*)+", _text(path)):
            group = tuple(a for a in re.findall(ASSIGN, run.group(0)) if a not in PLACEHOLDERS)
            if group:
                found.append((path.relative_to(ROOT).as_posix(), group))
    return found


SETS = _set_examples()


def test_docs_show_overrides():
    assert len(SETS) >= 10, SETS  # the parser finds them (a broken regex would pass vacuously)
    assert any(len(group) > 1 for _, group in SETS)  # and keeps a command's flags together


@pytest.mark.parametrize("where, group", SETS, ids=[f"{w}:{' '.join(g)}" for w, g in SETS])
def test_every_documented_override_is_accepted(where, group, tmp_path):
    overrides = [a.replace("$PWD", str(tmp_path)).rstrip(".,;:") for a in group]
    extra = ["eval.norm=linf", "eval.epsilon=0.1"] if any(a.startswith("objective.name=pat") for a in overrides) else []
    load_config(ROOT / "configs" / "quickstart.yaml", [*overrides, *extra])


def _readme_commands() -> list[tuple[str, ...]]:
    """Every ``adcs SUBCOMMAND [ACTION]`` the README shows, as the argument tuple for --help."""
    text = _text(ROOT / "README.md")
    subcommands = {"train", "evaluate", "sweep", "ui", "data"}
    found = set()
    for match in re.finditer(r"(?:^|[\s`(/])adcs ([a-z]+)(?: ([a-z]+))?", text):
        sub, action = match.groups()
        if sub in subcommands:
            found.add((sub, action) if sub == "data" and action else (sub,))
    return sorted(found)


COMMANDS = _readme_commands()


def test_readme_shows_every_command():
    assert {c[0] for c in COMMANDS} == {"train", "evaluate", "sweep", "ui", "data"}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_readme_command_has_help(command):
    done = run_adcs(*command, "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: adcs " + " ".join(command)), done.stdout[:200]


def test_tests_named_in_docs_exist():
    named = set()
    for path in DOCS:
        named |= set(re.findall(r"(test_\w+\.py)::(test_\w+)", _text(path)))
    assert named
    for file, test in sorted(named):
        source = (ROOT / "tests" / file)
        assert source.is_file(), f"{file} (named in the docs) does not exist"
        assert re.search(rf"def {test}\b", source.read_text()), f"{file}::{test} (named in the docs) does not exist"


def _plugin_param_keys() -> set[str]:
    """``objective.params.beta`` and the like: every registered entry's own parameters, found
    through the schema's params fields (a default config holds only its default entries')."""
    import dataclasses
    import typing

    from distributed_adcs.config import JobConfig

    keys = set()
    for section, cls in typing.get_type_hints(JobConfig).items():
        for field in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
            if "registry" in field.metadata:
                keys.add(f"{section}.{field.name}")
                keys |= {f"{section}.{field.name}.{p.name}" for spec in field.metadata["registry"].values()
                         for p in dataclasses.fields(spec.params)}
    return keys


def test_readme_config_table_names_real_keys_and_values():
    keys = set(flatten(load_config(None))) | _plugin_param_keys()
    assert {"objective.params.beta", "model.params.depth", "coreset.params.uniform_share"} <= keys
    text = _text(ROOT / "README.md")
    table = text[text.index("| key | default | meaning |"):]
    table = table[:table.index("\n\n")]
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    assert len(rows) >= 15
    for key_cell, _default, meaning in rows:
        for key in re.findall(r"`([a-z_]+\.[a-z_.]+)`", key_cell + meaning):
            if "." in key and not key.endswith((".yaml", ".md", ".py")):
                assert key in keys, f"README names config key {key}, which does not exist"
    # a row whose meaning is a list of choices ("`full` (baseline), `craig`, ...") lists accepted values
    checked = 0
    for key_cell, _default, meaning in rows:
        names = re.findall(r"`([a-z_.]+)`", key_cell)
        if len(names) != 1 or not meaning.strip().startswith("`"):
            continue
        for value in re.findall(r"`([a-z_0-9]+)`", meaning):
            if f"{names[0].split('.')[0]}.{value}" not in keys and value not in keys:
                needs = ["eval.norm=linf", "eval.epsilon=0.1"] if value == "pat" else []  # pat's eps is not pixels
                load_config(None, [f"{names[0]}={value}", *needs])
                checked += 1
    assert checked >= 15
