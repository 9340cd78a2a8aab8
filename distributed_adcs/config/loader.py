"""Loading a job config: YAML and dotted overrides walked against the schema (``schema.py``).

One walker (:func:`walk`) checks every mapping against its dataclass: a job config, its
sections, a plug-in's parameters and a sweep file. An unknown key, a value of the wrong type or
an out-of-range value raises :class:`ConfigError` *before* any data is read or any worker
starts, with a one-line message that names the dotted key (``objective.epsilon: must be in
[0, 1], got 8``). Nothing here imports torch, Ray or MLflow.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from ..errors import ConfigError
from ..errors import check as _check
from ..specs import lookup
from .schema import JobConfig, moved_key_message


_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, partial: bool) -> Any:
    """Return ``value`` checked against the annotation ``tp`` (ints widen to floats only)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            _check(type(None) in options, key, "must not be null")
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, key, partial)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        choices = get_args(tp)
        _check(value in choices, key, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if tp is Any:
        return value
    if origin is list or tp is list:
        _check(isinstance(value, (list, tuple)), key, f"must be a list, got {value!r}")
        (item,) = get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]", partial) for i, v in enumerate(value)]
    if origin is dict:
        _check(isinstance(value, dict), key, f"must be a mapping, got {value!r}")
        _, item = get_args(tp)
        return {str(k): _coerce(v, item, f"{key}.{k}", partial) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        # a type hint, so the class and not an instance (is_dataclass narrows to both)
        return walk(typing.cast(type, tp), value, key, partial=partial)
    if tp is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-6 (no dot) as a string
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        _check(ok, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported annotation {_type_name(tp)}")


def walk(cls: type, raw: Any, prefix: str = "", *, partial: bool = False, entry: str = "") -> Any:
    """The one walk of a mapping against a dataclass schema: a job config, one of its sections,
    a plug-in's parameters, a sweep file.

    Every key must be a field (a key that moved names its new place, :data:`MOVED_KEYS`), every
    value must have its field's type (ints widen to floats only, nested dataclasses are walked
    in turn), and a :func:`plugin_params` field is walked against the parameter class of the
    registry entry its sibling names.

    Args:
        cls: the dataclass.
        raw: the parsed YAML mapping.
        prefix: the dotted key of ``raw`` itself, for the messages.
        partial: check only the keys and values present and build nothing: for overrides of a
            config not at hand yet (:func:`check_overrides`). Ranges, cross-field rules and the
            ``params`` of an entry the overrides do not name are checked once the whole config
            is built.
        entry: the registry entry ``cls`` is the parameters of, for the unknown-key message.

    Returns:
        The ``cls`` built from ``raw`` (its defaults for absent keys, its ``__post_init__``
        checks run), or ``None`` when ``partial``.

    Raises:
        ConfigError: one line naming the dotted key.
    """
    _check(isinstance(raw, dict), prefix, f"must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            valid = f"valid for {entry}: {', '.join(fields) or 'none'}" if entry else f"valid: {', '.join(fields)}"
            raise ConfigError(dotted, moved_key_message(dotted) or f"unknown key ({valid})")
        if "registry" in fields[key].metadata:
            kwargs[key] = _walk_params(fields, raw, key, prefix, partial)
        else:
            kwargs[key] = _coerce(value, hints[key], dotted, partial)
    if partial:
        return None
    try:
        return cls(**kwargs)
    except ConfigError as err:  # re-raise with the section prefix
        if prefix and not err.key.startswith(prefix + "."):
            raise ConfigError(f"{prefix}.{err.key}" if err.key else prefix, err.message) from None
        raise


def _walk_params(fields: dict[str, dataclasses.Field], raw: dict, key: str, prefix: str, partial: bool) -> Any:
    """``raw[key]`` walked against the parameter class of the entry ``raw``'s ``by`` field names."""
    registry, by = fields[key].metadata["registry"], fields[key].metadata["by"]
    if partial and by not in raw:
        return None  # which entry is not known before the whole config is
    name = raw.get(by, fields[by].default)
    spec = lookup(registry, name, f"{prefix}.{by}" if prefix else by)
    dotted = f"{prefix}.{key}" if prefix else key
    return None if raw[key] is None else walk(spec.params, raw[key], dotted, partial=partial, entry=str(name))


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``dotted.key=value`` to a raw mapping; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(assignment, "override must look like key=value")
    dotted, text = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    _check(all(parts), dotted, "empty key in override")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if child is None:  # a section set to null (its defaults) takes keys again
            child = node[part] = {}
        _check(isinstance(child, dict), dotted, f"{part} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def _sections() -> str:
    return ", ".join(f.name for f in dataclasses.fields(JobConfig))


def config_from_dict(raw: dict | None, overrides: typing.Sequence[str] = ()) -> JobConfig:
    """Build a validated :class:`JobConfig` from a mapping plus dotted overrides."""
    _check(raw is None or isinstance(raw, dict), "",
           f"the top level must be a mapping of sections ({_sections()}), got {type(raw).__name__}")
    raw = dict(raw or {})
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy, plain types
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return walk(JobConfig, raw)
    except ConfigError as err:
        raise _entry_changed_hint(err, overrides) from None


def _entry_changed_hint(err: ConfigError, overrides: typing.Sequence[str]) -> ConfigError:
    """``err``, told why when it is an unknown key of a plug-in's ``params`` whose entry an
    override changed: the file's params are the old entry's, and they stay."""
    section, _, rest = err.key.partition(".params.")
    cls = typing.get_type_hints(JobConfig).get(section)
    if not rest or "unknown key" not in err.message or not dataclasses.is_dataclass(cls):
        return err
    by = {f.metadata.get("by") for f in dataclasses.fields(cls)} - {None}
    changed = [f"{section}.{b}" for b in by if any(a.split("=", 1)[0].strip() == f"{section}.{b}" for a in overrides)]
    if not changed:
        return err
    return ConfigError(err.key, f"{err.message}; the {section}.params given stay when an override changes "
                                f"{changed[0]}: set {section}.params=null too")


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The parsed YAML of ``path``; a missing, unreadable or malformed file is a one-line
    :class:`ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError("", f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path}: not a YAML text file (not UTF-8)") from None
    except OSError as err:
        raise ConfigError("", f"{path}: cannot read ({err.strerror})") from None


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> JobConfig:
    """Read a YAML file (or nothing: defaults) and apply ``key=value`` overrides."""
    return config_from_dict(read_yaml(path) if path is not None else None, overrides)


def check_overrides(overrides: typing.Sequence[str]) -> None:
    """Check the keys and value types of ``overrides`` alone, for overrides of a config that is
    not at hand yet (``adcs evaluate`` applies them to a checkpoint's config): what they name
    must exist and have the right type; ranges are checked once the whole config is built."""
    raw: dict = {}
    for assignment in overrides:
        apply_override(raw, assignment)
    walk(JobConfig, raw, partial=True)


def to_dict(cfg: Any) -> dict:
    """The config as plain nested dicts (for YAML dumps and Ray payloads)."""
    return dataclasses.asdict(cfg)


def flatten(cfg: Any) -> dict[str, Any]:
    """``{"data.name": "fashion_mnist", ...}``: the shape MLflow params and Tune want."""
    out: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            else:
                out[key] = v

    walk(to_dict(cfg), "")
    return out


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
