"""Typed dataclass configs merged strictly with YAML files and ``key.sub=value`` CLI overrides.

One idiom for every config of encoder/ and llava_ov/: a choice is a ``Literal[...]`` field (checked here,
on load by :func:`merge_config` and for a config built in Python by :func:`check_choices`, which its
``validate()`` calls), ``validate()`` holds only the rules between fields and ranges, and every error
is a :class:`ConfigError`. Unknown keys are errors (with the valid choices listed), values are coerced
to the declared field type, nested dataclasses merge recursively, and so do the entries of a
``dict[str, Section]`` field (name → section). A ``Partial[Section]`` field holds updates of a section
that another config supplies (a run's overrides of the data config it names): checked as strictly when
it is merged, applied later with :func:`merge_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

#: Field metadata of :func:`optional_section`: an empty mapping given to the field means None (off).
EMPTY_IS_NONE = "empty_is_none"


class ConfigError(ValueError):
    """A config key or value that does not fit the declared dataclass."""


@dataclasses.dataclass(frozen=True)
class _PartialOf:
    section: type


class Partial:
    """``Partial[Section]``: the type of a field holding updates of a ``Section`` dataclass, not a whole
    one: a plain nested mapping of some of its keys (``{}``: none), applied later with
    :func:`merge_config`. Merged as strictly as a section: unknown keys are errors (with the closest
    valid one), values are coerced to the declared field types, nested sections are partial too, and a
    later update merges key by key (an override of ``data.max_tokens`` keeps the ``data`` keys given
    before; a list is replaced). ``validate()`` does not run on it: the rules between fields hold for
    the config the updates are merged into."""

    def __class_getitem__(cls, section: type) -> Any:
        if not (isinstance(section, type) and dataclasses.is_dataclass(section)):
            raise TypeError(f"Partial[...] takes a dataclass, got {section!r}")
        return typing.Annotated[dict[str, Any], _PartialOf(section)]


def _partial_of(tp: Any) -> type | None:
    """The section of a ``Partial[Section]`` type; None for other types."""
    for meta in getattr(tp, "__metadata__", ()):
        if isinstance(meta, _PartialOf):
            return meta.section
    return None


def optional_section() -> Any:
    """A ``Section | None`` field, None (off) by default and whenever it is given an empty mapping
    (``build: {}`` in YAML, ``build={}`` on the command line); a non-empty mapping fills it."""
    return dataclasses.field(default=None, metadata={EMPTY_IS_NONE: True})


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints, extras = typing.get_type_hints(cls), typing.get_type_hints(cls, include_extras=True)
    return {
        f.name: extras[f.name] if _partial_of(extras[f.name]) else hints[f.name]
        for f in dataclasses.fields(cls)
    }


@functools.cache
def _off_when_empty(cls: type) -> frozenset[str]:
    """The fields of ``cls`` made by :func:`optional_section`."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get(EMPTY_IS_NONE))


def _literal_choices(tp: Any) -> tuple[tuple[Any, ...], bool] | None:
    """(choices, None allowed) of ``Literal[...]`` / ``Literal[...] | None``; None for other types."""
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp), False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and typing.get_origin(args[0]) is typing.Literal:
            return typing.get_args(args[0]), True
    return None


@functools.cache
def _choice_fields(cls: type) -> tuple[tuple[str, tuple[Any, ...], bool], ...]:
    return tuple(
        (name, *spec) for name, tp in _field_types(cls).items() if (spec := _literal_choices(tp)) is not None
    )


def _is_choice(value: Any, choices: tuple[Any, ...]) -> tuple[bool, Any]:
    """(whether ``value`` is one of ``choices``, the choice); True is not 1."""
    for choice in choices:
        if isinstance(value, bool) == isinstance(choice, bool) and value == choice:
            return True, choice
    return False, None


def _choice_error(name: str, choices: tuple[Any, ...], value: Any) -> ConfigError:
    return ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_choices(cfg: Any, prefix: str = "") -> None:
    """ConfigError naming the first ``Literal[...]`` field of dataclass ``cfg`` (nested sections, list
    items and ``dict[str, Section]`` entries included) whose value is not one of its choices.

    :func:`merge` runs it on every merged config; ``validate()`` of a config that may be built directly
    in Python calls it first (``prefix``: the section's name in a run config, e.g. ``"media."``)."""
    for name, choices, optional in _choice_fields(type(cfg)):
        value = getattr(cfg, name)
        if not (optional and value is None) and not _is_choice(value, choices)[0]:
            raise _choice_error(f"{prefix}{name}", choices, value)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{prefix}{f.name}.")
        elif isinstance(value, dict):
            for key, item in value.items():
                if dataclasses.is_dataclass(item):
                    check_choices(item, f"{prefix}{f.name}.{key}.")
        elif isinstance(value, (list, tuple)):
            for item in value:
                if dataclasses.is_dataclass(item):
                    check_choices(item, f"{prefix}{f.name}.")


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
    if (section := _partial_of(tp)) is not None:
        return check_partial(section, value, name)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        if _literal_choices(tp) is not None:  # Literal[...] | None: the choices are the message
            return _coerce(value, next(a for a in args if a is not type(None)), name)
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, name)
            except (ConfigError, ValueError, TypeError) as e:
                errors.append(str(e))
        raise ConfigError(f"'{name}': cannot read {value!r} as {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        found, choice = _is_choice(value, choices)
        if not found and isinstance(value, str):  # a CLI string for a number / boolean choice ("2")
            found, choice = _is_choice(_scalar(value), choices)
        if not found:
            raise _choice_error(name, choices, value)
        return choice
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
        item = _item_type(tp)
        if item is None:
            return dict(value)
        return {key: _coerce(v, item, f"{name}.{key}") for key, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str):
            value = _yaml(value, name)
        if not isinstance(value, dict):
            raise ConfigError(f"'{name}' must be a mapping of {tp.__name__} fields, got {value!r}")
        return merge_config(tp(), value, prefix=f"{name}.")
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


def _item_type(tp: Any) -> Any:
    """The declared value type of a ``dict[K, V]`` field (None for a plain ``dict``)."""
    args = typing.get_args(tp) if typing.get_origin(tp) is dict else ()
    return args[1] if len(args) == 2 and args[1] is not Any else None


def _merge_entries(current: dict[str, Any], updates: dict[str, Any], tp: Any, name: str) -> dict[str, Any]:
    """A ``dict[str, Section]`` field updated entry by entry: an existing entry merges field by field,
    a new one is filled from the section's defaults (both strict)."""
    out = dict(current)
    for key, value in updates.items():
        if dataclasses.is_dataclass(out.get(key)) and isinstance(value, dict):
            out[key] = merge_config(out[key], value, prefix=f"{name}.{key}.")
        else:
            out[key] = _coerce(value, tp, f"{name}.{key}")
    return out


def _empty_mapping(value: Any, name: str) -> bool:
    if isinstance(value, str) and value.strip().startswith("{"):
        value = _yaml(value, name)
    return isinstance(value, dict) and not value


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


def _section_type(tp: Any) -> type | None:
    """The dataclass of a ``Section`` / ``Section | None`` / ``Partial[Section]`` type."""
    if (section := _partial_of(tp)) is not None:
        return section
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))


def check_partial(
    section: type, updates: Any, name: str, current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``current`` (checked updates of dataclass ``section``; default none) ← ``updates`` (a mapping, or
    its YAML text), checked strictly as :class:`Partial` says; ``name`` is the key of the updates, for
    the messages (``data``). Returns the merged updates; ``current`` is not changed."""
    if isinstance(updates, str):
        updates = _yaml(updates, name)
    if not isinstance(updates, dict):
        raise ConfigError(f"'{name}' must be a mapping of {section.__name__} fields, got {updates!r}")
    ftypes = _field_types(section)
    out = dict(current or {})
    for key, value in updates.items():
        if key not in ftypes:
            raise _unknown_key(key, list(ftypes), f"{name}.")
        tp, here, old = ftypes[key], f"{name}.{key}", out.get(key)
        old_map = old if isinstance(old, dict) else None
        inner, item = _section_type(tp), _item_type(tp)
        if key in _off_when_empty(section) and _empty_mapping(value, here):
            out[key] = {}  # the section off (None) where the updates are applied
        elif inner is not None and isinstance(value, (dict, str)) and not _is_null(value):
            out[key] = check_partial(inner, value, here, old_map)
        elif item is not None and _section_type(item) is not None and isinstance(value, dict):
            entries = dict(old_map or {})
            for k, v in value.items():
                prev = entries.get(k)
                entries[k] = check_partial(item, v, f"{here}.{k}", prev if isinstance(prev, dict) else None)
            out[key] = entries
        elif item is None and (tp is dict or typing.get_origin(tp) is dict) and isinstance(value, dict):
            out[key] = deep_merge(old_map or {}, value)
        else:
            out[key] = _coerce(value, tp, here)
    return out


def merge_config(cfg: T, updates: dict[str, Any], prefix: str = "") -> T:
    """Return a copy of dataclass ``cfg`` with ``updates`` (a nested mapping) applied strictly.

    Nested dataclasses merge field by field; a ``dict[str, Section]`` field merges entry by entry (each
    entry field by field), a ``Partial[Section]`` field as :func:`check_partial` says, other
    mapping-typed fields key by key (:func:`deep_merge`), so overriding ``codec.select.budget`` keeps
    the other keys of ``codec``. The result's choices are checked (:func:`check_choices`), then its
    ``validate()`` runs.
    """
    ftypes = _field_types(type(cfg))
    changes: dict[str, Any] = {}
    for key, value in (updates or {}).items():
        if key not in ftypes:
            raise _unknown_key(key, list(ftypes), prefix)
        tp = ftypes[key]
        current = getattr(cfg, key)
        if key in _off_when_empty(type(cfg)) and _empty_mapping(value, f"{prefix}{key}"):
            changes[key] = None
        elif (section := _partial_of(tp)) is not None:
            changes[key] = check_partial(section, value, f"{prefix}{key}", current)
        elif dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = merge_config(current, value, prefix=f"{prefix}{key}.")
        elif isinstance(current, dict) and isinstance(value, dict):
            item = _item_type(tp)
            changes[key] = (
                _merge_entries(current, value, item, f"{prefix}{key}")
                if item is not None
                else deep_merge(current, value)
            )
        else:
            changes[key] = _coerce(value, tp, f"{prefix}{key}")
    out = dataclasses.replace(cfg, **changes)
    check_choices(out, prefix)
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
    """Defaults of ``cls`` (or ``base``) ← YAML file ← CLI overrides, all strict; the result is always
    checked (:func:`merge` runs its ``validate()``), so callers need not validate it again."""
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
        cfg = merge_config(cfg, data)
    if overrides or yaml_path is None:
        cfg = merge_config(cfg, parse_overrides(overrides or []))
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (for logging, YAML dumps and checkpoints)."""
    return dataclasses.asdict(cfg)
