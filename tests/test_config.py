"""Strict config merging: defaults ← YAML ← CLI overrides; unknown keys and bad values are errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from encoder.typed_config import (
    ConfigError,
    check_choices,
    load_config,
    merge_config,
    optional_section,
    parse_overrides,
    to_dict,
)


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
        merge_config(Outer(), {"inner": {"stpes": 1}})


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


@dataclass
class Build:
    teacher: Literal["pixels", "tower"] = "pixels"
    centres: int = 64


@dataclass
class Head:
    bank: str = ""
    weight: float = 1.0
    merge: Literal[1, 2] = 1
    build: Build | None = optional_section()


@dataclass
class Run:
    mode: Literal["codec", "frames"] | None = None
    head: Head = field(default_factory=Head)
    heads: dict[str, Head] = field(default_factory=dict)


def test_choices_are_checked_and_the_error_names_the_key():
    with pytest.raises(ConfigError, match=r"head\.merge must be one of \[1, 2\], got '3'"):
        load_config(Run, None, ["head.merge=3"])
    with pytest.raises(ConfigError, match=r"heads\.a\.build\.teacher must be one of \['pixels', 'tower'\]"):
        merge_config(Run(), {"heads": {"a": {"build": {"teacher": "clip"}}}})
    with pytest.raises(ConfigError, match=r"^mode must be one of \['codec', 'frames'\], got 'gif'$"):
        load_config(Run, None, ["mode=gif"])
    cfg = load_config(Run, None, ["head.merge=2", "mode=frames"])
    assert cfg.head.merge == 2 and cfg.mode == "frames"
    assert load_config(Run, None, ["mode=none"]).mode is None
    # a config built in Python: check_choices (what validate() calls) and any merge see the bad value
    bad = Run(heads={"a": Head(build=Build(teacher="clip"))})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"run\.heads\.a\.build\.teacher must be one of"):
        check_choices(bad, "run.")
    with pytest.raises(ConfigError, match=r"^head\.merge must be one of"):
        merge_config(Run(head=Head(merge=True)), {})  # type: ignore[arg-type]  # True is not 1
    check_choices(Run())


def test_dict_of_sections_merges_strictly_entry_by_entry(tmp_path):
    y = tmp_path / "h.yaml"
    y.write_text("heads:\n  video: {bank: b1, build: {teacher: tower}}\n  image: {bank: b2}\n")
    cfg = load_config(Run, y, ["heads.video.weight=2", "heads.video.build.centres=8", "heads.new.bank=b3"])
    assert cfg.heads == {
        "video": Head(bank="b1", weight=2.0, build=Build(teacher="tower", centres=8)),
        "image": Head(bank="b2"),
        "new": Head(bank="b3"),
    }
    with pytest.raises(
        ConfigError, match=r"unknown config key 'heads\.video\.bnk' \(did you mean 'bank'\?\)"
    ):
        merge_config(cfg, {"heads": {"video": {"bnk": "x"}}})
    with pytest.raises(ConfigError, match=r"unknown config key 'heads\.new\.build\.centers'"):
        merge_config(cfg, {"heads": {"new": {"build": {"centers": 1}}}})
    # a CLI string replaces the section from its defaults; an empty mapping turns an optional one off
    replaced = load_config(Run, y, ["heads.video.build={centres: 4}"])
    assert replaced.heads["video"].build == Build(centres=4)
    assert load_config(Run, y, ["heads.video.build={}"]).heads["video"].build is None
    assert merge_config(cfg, {"heads": {"video": {"build": {}}}}).heads["video"].build is None
    # round trip: to_dict → merge gives the same config
    data = to_dict(cfg)
    assert data["heads"]["video"]["build"] == {"teacher": "tower", "centres": 8}
    assert merge_config(Run(), data) == cfg
