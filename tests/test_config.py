"""Strict config merging: defaults ← YAML ← CLI overrides; unknown keys and bad values are errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from encoder.config import ConfigError, load_config, merge, parse_overrides


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    budget: int | float = 2048


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    flag: bool = False
    tags: list[str] = field(default_factory=list)
    limit: int | None = None

    def validate(self) -> None:
        if self.inner.steps < 0:
            raise ValueError("steps must be >= 0")


def test_yaml_then_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("inner:\n  lr: 0.5\n  steps: 3\nflag: true\n")
    cfg = load_config(Outer, y, ["inner.steps=7", "tags=a,b", "limit=none", "inner.budget=0.25"])
    assert cfg.inner.lr == 0.5 and cfg.inner.steps == 7 and cfg.flag is True
    assert cfg.tags == ["a", "b"] and cfg.limit is None
    assert cfg.inner.budget == 0.25 and isinstance(cfg.inner.budget, float)
    assert load_config(Outer, None, ["inner.budget=64"]).inner.budget == 64
    assert Outer().inner.steps == 10  # defaults untouched


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'inner.stpes'.*did you mean 'steps'"):
        merge(Outer(), {"inner": {"stpes": 1}})


@pytest.mark.parametrize(
    "override,match",
    [
        ("inner.steps=1.5", "integer"),
        ("flag=maybe", "boolean"),
        ("inner.lr=fast", "number"),
        ("noequals", "key=value"),
    ],
)
def test_bad_values(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Outer, None, [override])


def test_validate_hook_runs():
    with pytest.raises(ValueError, match="steps must be"):
        load_config(Outer, None, ["inner.steps=-1"])


def test_missing_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_parse_overrides_nests():
    assert parse_overrides(["a.b.c=1", "a.d=2"]) == {"a": {"b": {"c": "1"}, "d": "2"}}


@dataclass
class WithMapping:
    codec: dict = field(
        default_factory=lambda: {"mode": "codec", "select": {"budget": 2048, "context": "first"}}
    )
    name: str = "x"


def test_mapping_fields_merge_key_by_key(tmp_path):
    y = tmp_path / "m.yaml"
    y.write_text("codec:\n  decode: {num_frames: 16}\n  prompt: 'Answer: yes'\n")
    cfg = load_config(WithMapping, y, ["codec.select.budget=128", "codec.select.flag=true", "name=true"])
    assert cfg.codec == {
        "mode": "codec",
        "select": {"budget": 128, "context": "first", "flag": True},
        "decode": {"num_frames": 16},
        "prompt": "Answer: yes",
    }
    assert cfg.name == "true"  # typed str fields keep the string
    assert WithMapping().codec["select"]["budget"] == 2048  # the default is not mutated
