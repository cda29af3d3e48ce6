"""Shards: write → read round trips (mp4 / npz / jpg), bad samples skipped and counted (also across
DataLoader workers), node x worker splitting, repeat and seeded shuffling."""

from __future__ import annotations

import io
import itertools
import json
from collections import Counter

import numpy as np
import pytest

from encoder.codec import CodecConfig, DecodeConfig, PatchSelection, SelectConfig
from encoder.codec.synthetic import make_clip
from llava_ov.data import shards as shards_mod
from llava_ov.data.dataset import make_item
from llava_ov.data.mixture import DataConfig, SourceConfig, build_loader
from llava_ov.data.samples import MediaSample, decode_sample
from llava_ov.data.shards import ReadConfig, ShardWriter, expand_shards, iter_raw_samples, shard_pattern
from llava_ov.data.stats import Skipped

CODEC = CodecConfig(decode=DecodeConfig(num_frames=8, input_size=56), select=SelectConfig(budget=32))
CODEC_OVERRIDES = {"decode": {"num_frames": 8, "input_size": 56}, "select": {"budget": 32}}


def _conv(question: str = "What moves?", answer: str = "A square.", media: str = "<video>\n") -> dict:
    return {"conversations": [{"from": "human", "value": media + question}, {"from": "gpt", "value": answer}]}


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("clip") / "c.mp4"
    make_clip(path, "mover", width=64, height=64, num_frames=8, seed=1)
    return path.read_bytes()


@pytest.fixture(scope="module")
def jpg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _read_all(pattern, cfg=ReadConfig(shuffle_shards=False)) -> list:
    return list(iter_raw_samples(pattern, cfg))


def test_round_trip_mp4_npz_jpg(tmp_path, mp4, jpg, tokenizer):
    npz = PatchSelection.from_bytes(
        decode_sample({"__key__": "x", "json": json.dumps(_conv()).encode(), "mp4": mp4}, CODEC)
        .media[0]
        .to_bytes()
    )
    with ShardWriter(tmp_path, max_samples=2) as w:
        w.write("clip.one", _conv(), [("mp4", mp4)])  # dot in the key: sanitized
        w.write("pre", _conv(), [("npz", npz.to_bytes())])
        w.write("img", _conv("What is it?", media="<image>\n"), [("jpg", jpg)])
        w.write("two", _conv(media="<image>\n<video>\n"), [("jpg", jpg), ("mp4", mp4)])
    assert [p.name for p in w.paths] == ["shard-000000.tar", "shard-000001.tar"]
    raws = _read_all(shard_pattern(w.paths))
    assert [r["__key__"] for r in raws] == ["clip_one", "pre", "img", "two"]
    samples = [decode_sample(r, CODEC) for r in raws]
    assert all(isinstance(s, MediaSample) for s in samples), samples
    clip, pre, img, two = samples
    assert len(clip.media[0]) == 32 and clip.kinds == ["video"] and clip.media[0].grid_hw == (4, 4)
    np.testing.assert_array_equal(pre.media[0].positions, clip.media[0].positions)
    np.testing.assert_array_equal(pre.media[0].pixels, clip.media[0].pixels)
    assert img.kinds == ["image"] and img.media[0].grid_hw == (3, 4)  # 40x60 → 42x56 at p=14
    assert two.kinds == ["image", "video"] and [len(m) for m in two.media] == [12, 32]
    item = make_item(two, tokenizer, tokens_for=lambda s: len(s) // 4)
    assert [b - a for a, b, _ in item.tokens.media_spans] == [3, 8]
    assert [k for *_, k in item.tokens.media_spans] == ["image", "video"]


def _bad_shard(tmp_path, mp4) -> str:
    long_text = "word " * 400
    with ShardWriter(tmp_path / "bad") as w:
        w.write("good0", _conv(), [("mp4", mp4)])
        w.write("corrupt", _conv(), [("mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)])
        w.write("good1", _conv(), [("mp4", mp4)])
        w.write("badjson", b"{not json", [("mp4", mp4)])
        w.write("nomedia", _conv())
        w.write("toolong", _conv(question=long_text), [("mp4", mp4)])
        w.write("good2", _conv(), [("mp4", mp4)])
    return str(tmp_path / "bad")


EXPECTED_SKIPS = {"corrupt_media": 1, "bad_json": 1, "missing_media": 1, "too_long": 1}


def test_bad_samples_are_skipped_and_counted(tmp_path, mp4, tokenizer):
    out = []
    for raw in _read_all(_bad_shard(tmp_path, mp4)):
        sample = decode_sample(raw, CODEC, "src")
        out.append(make_item(sample, tokenizer, max_length=256))
    skips = {s.key: s.reason for s in out if isinstance(s, Skipped)}
    assert skips == {
        "corrupt": "corrupt_media",
        "badjson": "bad_json",
        "nomedia": "missing_media",
        "toolong": "too_long",
    }
    assert [it.key for it in out if not isinstance(it, Skipped)] == ["good0", "good1", "good2"]


@pytest.mark.parametrize("workers", [0, 2])
def test_skips_reach_main_process_through_workers(tmp_path, mp4, tokenizer, workers, caplog):
    cfg = DataConfig(
        sources=[SourceConfig(name="bad", shards=_bad_shard(tmp_path, mp4))],
        codec=CODEC_OVERRIDES,
        max_length=256,
        max_tokens=512,
        repeat=False,
        shuffle_buffer=0,
        num_workers=workers,
    )
    loader = build_loader(cfg, tokenizer)
    with caplog.at_level("WARNING", logger="llava_ov.data"):
        keys = sorted(k for batch in loader for k in batch.keys)
    assert keys == ["good0", "good1", "good2"]
    assert dict(loader.stats.skipped) == EXPECTED_SKIPS and loader.stats.used == 3
    assert loader.stats.by_source == {"bad": 4}
    assert "corrupt" in caplog.text and "corrupt_media" in caplog.text


def test_a_sample_skipped_on_every_pass_is_counted_each_time_and_logged_once(
    tmp_path, mp4, tokenizer, caplog
):
    cfg = DataConfig(
        sources=[SourceConfig(name="bad", shards=_bad_shard(tmp_path, mp4))],
        codec=CODEC_OVERRIDES,
        max_length=256,
        max_tokens=512,
        repeat=True,
        shuffle_buffer=0,
        num_workers=0,
    )
    loader = build_loader(cfg, tokenizer)
    with caplog.at_level("WARNING", logger="llava_ov.data"):
        keys = [k for batch in itertools.islice(loader, 12) for k in batch.keys]
    assert keys.count("good0") >= 3  # several passes over the shard
    assert loader.stats.skipped["corrupt_media"] >= 3
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped sample")]
    assert sorted(line.split()[2] for line in lines) == ["badjson", "corrupt", "nomedia", "toolong"]


def test_truncated_shard_is_a_counted_skip(tmp_path, mp4):
    good = _bad_shard(tmp_path, mp4) + "/shard-000000.tar"
    data = open(good, "rb").read()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2 + 100])
    out = _read_all([good, str(tmp_path / "cut.tar")], ReadConfig(shuffle_shards=False))
    assert any(isinstance(s, Skipped) and s.reason == "bad_shard" for s in out)
    assert sum(isinstance(s, dict) for s in out) >= 7


def _text_shards(tmp_path, n_shards: int, per_shard: int) -> str:
    for s in range(n_shards):
        with ShardWriter(tmp_path, prefix=f"t{s}", max_samples=per_shard) as w:
            for i in range(per_shard):
                w.write(f"s{s}_{i}", _conv(media=""))
    return str(tmp_path / "t*-*.tar")


@pytest.mark.parametrize("n_shards,split", [(5, "auto"), (3, "auto"), (5, "sample")])
def test_node_and_worker_split_is_disjoint_and_complete(tmp_path, monkeypatch, n_shards, split):
    pattern = _text_shards(tmp_path, n_shards, 4)
    everything = sorted(r["__key__"] for r in _read_all(pattern))
    assert len(everything) == 4 * n_shards
    seen = []
    for rank in range(2):
        for worker in range(2):
            monkeypatch.setattr(shards_mod, "worker_slot", lambda w=worker: (w, 2))
            cfg = ReadConfig(shuffle_buffer=3, seed=1, rank=rank, world_size=2, split=split)
            mine = [r["__key__"] for r in _read_all(pattern, cfg)]
            assert mine, (rank, worker)
            seen += mine
    assert sorted(seen) == everything  # disjoint (no duplicates) and complete


def test_repeat_and_seeded_shuffle(tmp_path):
    pattern = _text_shards(tmp_path, 2, 5)

    def take(seed: int, n: int) -> list[str]:
        stream = iter_raw_samples(pattern, ReadConfig(shuffle_buffer=4, seed=seed, repeat=True))
        return [next(stream)["__key__"] for _ in range(n)]

    a = take(0, 30)
    assert Counter(a) == {k: 3 for k in set(a)} and len(set(a)) == 10  # three full epochs
    assert a == take(0, 30) and a != take(1, 30)
    assert a[:10] != a[10:20]  # reshuffled per epoch


def test_expand_shards(tmp_path, monkeypatch):
    _text_shards(tmp_path, 3, 1)
    monkeypatch.setenv("SHARD_ROOT", str(tmp_path))
    assert len(expand_shards("${SHARD_ROOT}/t{0..2}-000000.tar")) == 3
    assert expand_shards(str(tmp_path)) == sorted(str(p) for p in tmp_path.glob("*.tar"))
    assert expand_shards("pipe:cat a-{0..1}.tar") == ["pipe:cat a-0.tar", "pipe:cat a-1.tar"]
    assert expand_shards("${NOT_SET_ANYWHERE:-x}/a.tar") == ["x/a.tar"]
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE"):
        expand_shards("$NOT_SET_ANYWHERE/a.tar")


def test_pipe_urls(tmp_path):
    pattern = _text_shards(tmp_path, 2, 3)
    urls = [f"pipe:cat {p}" for p in expand_shards(pattern)]
    assert sorted(r["__key__"] for r in _read_all(urls)) == sorted(r["__key__"] for r in _read_all(pattern))
