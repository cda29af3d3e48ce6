"""Mixtures: weighted sampling, strict YAML configs, env-var expansion, the shipped configs."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from encoder.typed_config import ConfigError
from llava_ov.data.mixture import (
    DataConfig,
    MixtureDataset,
    SourceConfig,
    codec_config,
    load_data_config,
    resolve_shards,
    weighted_choices,
)
from llava_ov.data.shards import ShardWriter, expand_shards
from llava_ov.data.stats import Skipped

ROOT = Path(__file__).resolve().parents[3]


def _text_source(path: Path, name: str, n: int) -> str:
    with ShardWriter(path / name, max_samples=n) as w:
        for i in range(n):
            w.write(
                f"{name}{i}",
                {
                    "conversations": [
                        {"from": "human", "value": f"Say {i}."},
                        {"from": "gpt", "value": f"{i}"},
                    ]
                },
            )
    return str(path / name)


def test_weighted_choices_frequencies():
    draws = weighted_choices([3.0, 1.0, 0.5, 0.5], random.Random(0))
    counts = Counter(next(draws) for _ in range(20000))
    for i, p in enumerate([0.6, 0.2, 0.1, 0.1]):
        assert abs(counts[i] / 20000 - p) < 0.015


def test_mixture_respects_weights_and_is_deterministic(tmp_path, tokenizer):
    cfg = DataConfig(
        sources=[
            SourceConfig(name="a", shards=_text_source(tmp_path, "a", 6), weight=3.0, media_kind="text"),
            SourceConfig(name="b", shards=_text_source(tmp_path, "b", 6), weight=1.0, media_kind="text"),
        ],
        max_length=64,
        max_tokens=256,
        seed=3,
        shuffle_buffer=4,
        repeat=True,
        num_workers=0,
    )

    def draw(seed: int) -> list[str]:
        items = MixtureDataset(
            DataConfig(**{**cfg.__dict__, "seed": seed}), tokenizer, pack=False
        ).iter_items()
        return [next(items).source for _ in range(600)]

    sources = draw(3)
    assert abs(sources.count("a") / 600 - 0.75) < 0.06
    assert sources == draw(3) and sources != draw(4)


def test_exhausted_source_leaves_the_mixture(tmp_path, tokenizer):
    cfg = DataConfig(
        sources=[
            SourceConfig(name="a", shards=_text_source(tmp_path, "a", 3), weight=100.0, media_kind="text"),
            SourceConfig(name="b", shards=_text_source(tmp_path, "b", 5), weight=1.0, media_kind="text"),
        ],
        max_length=64,
        max_tokens=256,
        repeat=False,
        num_workers=0,
    )
    items = list(MixtureDataset(cfg, tokenizer, pack=False).iter_items())
    assert not any(isinstance(i, Skipped) for i in items)
    assert Counter(i.source for i in items) == {"a": 3, "b": 5}
    batches = list(MixtureDataset(cfg, tokenizer))
    assert sum(b.num_samples for b in batches) == 8


def test_strict_yaml(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(
        "sources:\n  - name: x\n    shards: /d/s-{0..3}.tar\n    codec: {select: {budget: 64}}\n"
        "max_tokens: 2048\nmax_length: 1024\n"
    )
    cfg = load_data_config(good, ["seed=7"])
    assert (
        cfg.seed == 7
        and cfg.sources[0].weight == 1.0
        and codec_config(cfg, cfg.sources[0]).select.budget == 64
    )
    for bad, match in [
        ("sources: []\nmax_tokns: 3\n", "max_tokens"),
        ("sources:\n  - name: x\n    shards: s.tar\n    wieght: 2\n", "weight"),
        ("sources:\n  - name: x\n    shards: s.tar\n    codec: {select: {budgett: 3}}\n", "budget"),
        ("sources:\n  - name: x\n    shards: s.tar\n    media_kind: audio\n", "media_kind"),
        ("sources:\n  - {name: x, shards: a.tar}\n  - {name: x, shards: b.tar}\n", "unique"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_text(bad)
        with pytest.raises(ConfigError, match=match):
            load_data_config(path)


def test_env_var_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    cfg = DataConfig(sources=[SourceConfig(name="x", shards="${DATA_ROOT}/llava/shard-{000000..000002}.tar")])
    urls = expand_shards(resolve_shards(cfg, cfg.sources[0]))
    assert urls == [f"{tmp_path}/llava/shard-00000{i}.tar" for i in range(3)]
    monkeypatch.delenv("DATA_ROOT")
    with pytest.raises(ValueError, match="DATA_ROOT"):
        expand_shards(cfg.sources[0].shards)


@pytest.mark.parametrize(
    "name", ["synthetic_motion_qa", "llava_onevision_sft.example", "llava_pretrain_558k.example"]
)
def test_shipped_configs_load(name, monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    cfg = load_data_config(ROOT / "data_configs" / f"{name}.yaml")
    assert cfg.sources and all(s.weight > 0 for s in cfg.sources)
    for s in cfg.sources:
        codec_config(cfg, s)
        if not s.shards.startswith("synthetic:"):
            assert expand_shards(s.shards)
    if name == "synthetic_motion_qa":
        assert cfg.synthetic is not None and cfg.synthetic.num_train == 4000
        codec = codec_config(cfg, cfg.sources[0])
        assert (codec.decode.num_frames, codec.decode.input_size) == (
            cfg.synthetic.num_frames,
            cfg.synthetic.size,
        )


def _tagged_source(path: Path, name: str, n: int) -> str:
    with ShardWriter(path / name, max_samples=n) as w:
        for i in range(n):
            w.write(
                f"{name}{i}",
                {
                    "qtype": "even" if i % 2 == 0 else "odd",
                    "conversations": [
                        {"from": "human", "value": f"Say {i}."},
                        {"from": "gpt", "value": f"{i}"},
                    ],
                },
            )
    return str(path / name)


def test_where_and_max_samples_make_a_curriculum(tmp_path, tokenizer):
    """A filtered, capped, heavy source comes first; once it has given max_samples it leaves the mixture
    and the other source takes over (per reader). Filtered-out samples are not counted as skipped."""
    shards = _tagged_source(tmp_path, "t", 20)
    cfg = DataConfig(
        sources=[
            SourceConfig(
                name="first",
                shards=shards,
                weight=1e6,
                media_kind="text",
                where={"qtype": ["even"]},
                max_samples=7,
            ),
            SourceConfig(name="rest", shards=shards, weight=1.0, media_kind="text"),
        ],
        max_length=64,
        max_tokens=256,
        shuffle_buffer=0,
        repeat=True,
        num_workers=0,
    )
    items = MixtureDataset(cfg, tokenizer, pack=False).iter_items()
    drawn = [next(items) for _ in range(30)]
    assert not any(isinstance(it, Skipped) for it in drawn)
    assert [it.source for it in drawn[:7]] == ["first"] * 7 and {it.source for it in drawn[7:]} == {"rest"}
    assert all(int(it.key[1:]) % 2 == 0 for it in drawn[:7])
    assert {int(it.key[1:]) % 2 for it in drawn[7:]} == {0, 1}
    with pytest.raises(ConfigError, match="max_samples"):
        SourceConfig(name="x", shards=shards, max_samples=0).validate()
