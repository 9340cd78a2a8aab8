"""Light registries of the plug-ins a job names: objectives, models and datasets.

Like :mod:`distributed_adcs.methods` for coreset methods, each registry is a dict from name to a
frozen spec that states every fact the rest of the code needs about an entry (an objective's
threat model, a dataset's image shape and default augmentation, ...) and names the code that
implements it as ``"module:attribute"``, imported on first use. Nothing here imports torch:
config validation reads these registries before torch, Ray or MLflow load.

A plug-in's own parameters (TRADES' beta, a Wide ResNet's depth) are a small frozen dataclass
named by its spec's ``params``; the config section holding the plug-in's name holds them under
``params:`` and the schema walker validates them against the chosen entry's class (an unknown
key fails naming ``objective.params.<key>``). Adding a plug-in is one module with its code plus
one entry in its registry; what an entry must provide is written next to each registry.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from ..errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class NoParams:
    """The parameters of an entry that has none of its own."""


@lru_cache(maxsize=None)
def resolve(ref: str) -> Any:
    """The object a ``"module:attribute"`` reference names (its module imported on first use)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class Entry(Protocol):
    # read-only members: the specs are frozen dataclasses, which a settable protocol member rejects
    @property
    def name(self) -> str: ...

    @property
    def params(self) -> type: ...


E = TypeVar("E", bound=Entry)


def lookup(registry: Mapping[str, E], name: object, key: str) -> E:
    """The entry ``name`` of ``registry``.

    Raises:
        ConfigError: naming ``key`` (the config key that names entries), with the valid names.
    """
    try:
        return registry[name]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ConfigError(key, f"must be one of {', '.join(registry)}; got {name!r}") from None


def entry_params(registry: Mapping[str, E], name: object, params: object, key: str = "name") -> object:
    """``params`` checked against entry ``name``'s parameter class; ``None``: its defaults.

    A config section calls this from ``__post_init__``, so a section built in Python is held to
    what the schema walker enforces on YAML.
    """
    cls = lookup(registry, name, key).params
    if params is None:
        return cls()
    if not isinstance(params, cls):
        raise ConfigError("params", f"must be {cls.__name__} for {name}, got {type(params).__name__}")
    return params


def checked_params(registry: Mapping[str, E], name: object, what: str, given: Mapping[str, object]) -> dict[str, Any]:
    """``given`` keyword parameters checked by entry ``name``'s params class, with its defaults
    for the absent ones: the keywords a builder or loader is called with.

    Raises:
        ValueError: an unknown name or keyword, or a value the params class rejects.
    """
    cls = lookup(registry, name, f"{what}.name").params
    try:
        params = cls(**given)
    except TypeError as err:  # a keyword the entry does not have
        raise ValueError(f"{what} {name}: {err}") from None
    return params_kwargs(params)


def params_kwargs(params: object) -> dict[str, Any]:
    """A params dataclass as the keywords of its builder or loader (shallow: no deep copy)."""
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}  # type: ignore[arg-type]
