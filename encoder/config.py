"""Typed dataclass configs merged strictly with YAML files and ``key.sub=value`` CLI overrides.

Unknown keys are errors (with the valid choices listed), values are coerced to the declared field
type, nested dataclasses merge recursively. Used by every entry point of encoder/ and llava_ov/.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value that does not fit the declared dataclass."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{where}{key}'{hint}; valid keys: {', '.join(sorted(valid))}")


def _yaml(text: str, name: str) -> Any:
    """A YAML value of the key ``name`` (ConfigError naming the key when it does not parse)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at column {where.column + 1}" if where is not None else ""
        raise ConfigError(
            f"'{name}': {text!r} is not valid YAML{at} ({getattr(e, 'problem', None) or e}); "
            "quote values holding { } or : characters"
        ) from None


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, name)
            except (ConfigError, ValueError, TypeError) as e:
                errors.append(str(e))
        raise ConfigError(f"'{name}': cannot read {value!r} as {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"'{name}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = _yaml(value, name) if value.strip().startswith("[") else value.split(",")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, inner, name) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = _yaml(value, name)
        if not isinstance(value, dict):
            raise ConfigError(f"'{name}' must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"'{name}' must be a mapping of {tp.__name__} fields, got {value!r}")
        return merge(tp(), value, prefix=f"{name}.")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"'{name}' must be a boolean, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"'{name}' must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"'{name}' must be an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"'{name}' must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"'{name}' must be a string, got {value!r}")
        return str(value)
    return value


def _scalar(text: str) -> Any:
    """A CLI string in an untyped mapping: bool / null / int / float literals are read as such."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated key by key (nested mappings recursively); string leaves of ``update`` that are
    bool / null / number literals become those, so a CLI ``a.b=64`` lands as the int 64."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = deep_merge({}, value)
        else:
            out[key] = _scalar(value) if isinstance(value, str) else value
    return out


def merge(cfg: T, updates: dict[str, Any], prefix: str = "") -> T:
    """Return a copy of dataclass ``cfg`` with ``updates`` (a nested mapping) applied strictly.

    Nested dataclasses merge field by field; mapping-typed fields merge key by key (:func:`deep_merge`),
    so overriding ``codec.select.budget`` keeps the other keys of ``codec``.
    """
    ftypes = _field_types(type(cfg))
    changes: dict[str, Any] = {}
    for key, value in (updates or {}).items():
        if key not in ftypes:
            raise _unknown_key(key, list(ftypes), prefix)
        tp = ftypes[key]
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = merge(current, value, prefix=f"{prefix}{key}.")
        elif isinstance(current, dict) and isinstance(value, dict):
            changes[key] = deep_merge(current, value)
        else:
            changes[key] = _coerce(value, tp, f"{prefix}{key}")
    out = dataclasses.replace(cfg, **changes)
    validate = getattr(out, "validate", None)
    if callable(validate):
        validate()
    return out


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` → ``{"a": {"b": "1"}, "c": "x"}`` (values stay strings; merge coerces)."""
    out: dict[str, Any] = {}
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"override '{arg}' must look like key=value (e.g. train.lr=1e-4)")
        key, value = arg.split("=", 1)
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{arg}' conflicts with an earlier override of '{p}'")
        node[leaf] = value
    return out


def load_config(
    cls: type[T],
    yaml_path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: T | None = None,
) -> T:
    """Defaults of ``cls`` (or ``base``) ← YAML file ← CLI overrides, all strict."""
    cfg = base if base is not None else cls()
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
        cfg = merge(cfg, data)
    if overrides:
        cfg = merge(cfg, parse_overrides(overrides))
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (for logging, YAML dumps and checkpoints)."""
    return dataclasses.asdict(cfg)
