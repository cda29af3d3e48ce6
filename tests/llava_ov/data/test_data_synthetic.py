"""Synthetic motion-QA: determinism, balance, cache, and that the answer is really in the pixels."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections import Counter

import numpy as np
import pytest

from llava_ov.data.synthetic_qa import (
    ANSWERS,
    QTYPES,
    SyntheticQAConfig,
    config_hash,
    generate_synthetic_qa,
    question_for,
    tokenizer_texts,
)
from llava_ov.data.synthetic_scenes import COLORS, COUNTS, DIRECTIONS


def _cfg(tmp, **kw) -> SyntheticQAConfig:
    base = dict(
        out_dir=str(tmp), num_train=20, num_heldout=10, size=64, num_frames=8, workers=1, samples_per_shard=8
    )
    return SyntheticQAConfig(**(base | kw))


def _members(paths) -> dict[str, bytes]:
    out = {}
    for p in paths:
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                out[m.name] = tar.extractfile(m).read()
    return out


def _records(paths) -> list[tuple[dict, bytes]]:
    files = _members(paths)
    return [(json.loads(v), files[k[:-5] + ".mp4"]) for k, v in sorted(files.items()) if k.endswith(".json")]


def _frames(mp4: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(mp4)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cfg = _cfg(root)
    return cfg, generate_synthetic_qa(cfg, progress=False)


def test_layout_and_records(generated):
    cfg, out = generated
    assert [len(out["train"]), len(out["heldout"])] == [3, 2]  # 20 / 8 per shard, 10 / 8
    recs = _records(out["train"])
    assert len(recs) == 20
    rec = recs[0][0]
    assert rec["conversations"][0]["value"].startswith("<video>\n")
    assert rec["conversations"][1]["value"] == rec["answer"] in ANSWERS[rec["qtype"]]
    assert rec["video"] == rec["id"] + ".mp4"


def test_deterministic_and_splits_differ(generated, tmp_path):
    cfg, out = generated
    again = generate_synthetic_qa(_cfg(tmp_path / "b"), progress=False)
    assert _members(out["train"]) == _members(again["train"])  # byte-identical json + mp4
    train = {r["id"][6:]: mp4 for r, mp4 in _records(out["train"])}
    held = {r["id"][8:]: mp4 for r, mp4 in _records(out["heldout"])}
    assert all(train[k] != held[k] for k in held)  # same index, different seed, different clip


def test_balanced_classes():
    for qtypes in (list(QTYPES), ["direction", "count"]):
        counts = Counter(question_for(i, qtypes) for i in range(1000))
        for q in qtypes:
            per_class = [counts[(q, a)] for a in ANSWERS[q]]
            assert max(per_class) - min(per_class) <= 1, (q, per_class)


def test_cache_hit_and_regeneration(tmp_path):
    cfg = _cfg(tmp_path, num_train=10, num_heldout=5)
    out = generate_synthetic_qa(cfg, progress=False)
    before = {k: _members(v) for k, v in out.items()}
    mtimes = [p.stat().st_mtime_ns for p in out["train"]]
    start = time.perf_counter()
    again = generate_synthetic_qa(cfg, progress=False)
    assert time.perf_counter() - start < 0.5
    assert again == out and [p.stat().st_mtime_ns for p in again["train"]] == mtimes
    changed = generate_synthetic_qa(_cfg(tmp_path, num_train=10, num_heldout=5, seed=5), progress=False)
    assert _members(changed["train"]) != before["train"]  # train seed changed: generated...
    assert changed["train"][0].parent != out["train"][0].parent  # ...in a sibling folder
    assert _members(changed["heldout"]) == before["heldout"]  # held-out config unchanged: cached
    # the first setting's cache is untouched, and switching back finds it
    assert [p.stat().st_mtime_ns for p in out["train"]] == mtimes and _members(out["train"]) == before[
        "train"
    ]
    assert generate_synthetic_qa(cfg, progress=False) == out


def test_cache_key_holds_only_what_shapes_the_stored_patches(tmp_path):
    def key(store="both", **codec):
        return config_hash(_cfg(tmp_path, store=store, codec={"patch_size": 16} | codec), "train")

    base = key(select={"budget": 32})
    # the dense modes' frame count and the still-image cap do not change a codec selection: one set
    assert key(select={"budget": 32}, num_frames=4, image_cell=16, image_max_cells=16) == base
    assert (
        key(select={"budget": 32}, decode={"num_frames": 8, "input_size": 64}) == base
    )  # defaults spelt out
    assert key(select={"budget": 48}) != base  # the budget does
    assert key(select={"budget": 32, "min_score": 4.0}) != base
    assert key(mode="frames", num_frames=4) != key(mode="frames", num_frames=2)  # frames mode: it does
    assert key(store="mp4", select={"budget": 32}) == key(store="mp4")  # mp4 only: no codec at all


def _mask(frame: np.ndarray, color: str) -> np.ndarray:
    return np.abs(frame.astype(int) - np.array(COLORS[color])).sum(-1) < 90


def _centroid(frame: np.ndarray, color: str) -> np.ndarray:
    ys, xs = np.nonzero(_mask(frame, color))
    assert len(xs) > 10, f"no {color} pixels"
    return np.array([xs.mean(), ys.mean()])


def test_answers_are_visible_in_decoded_video(tmp_path):
    cfg = _cfg(tmp_path, num_train=30, num_heldout=0, qtypes=["direction", "which_moved", "count"])
    recs = _records(generate_synthetic_qa(cfg, progress=False)["train"])
    checked = Counter()
    for rec, mp4 in recs:
        frames = _frames(mp4)
        assert frames.shape == (8, 64, 64, 3)
        objs = rec["scene"]["objects"]
        if rec["qtype"] == "direction":
            mover = next(o for o in objs if o["role"] == "mover")
            move = _centroid(frames[-1], mover["color"]) - _centroid(frames[0], mover["color"])
            assert np.sign(np.round(move / 8)).tolist() == list(DIRECTIONS[rec["answer"]]), (rec["id"], move)
        elif rec["qtype"] == "which_moved":
            moves = {
                o["color"]: np.abs(_centroid(frames[-1], o["color"]) - _centroid(frames[0], o["color"])).sum()
                for o in objs
            }
            assert max(moves, key=moves.get) == rec["answer"] and min(moves.values()) < 2
        else:
            blinker = next(o for o in objs if o["role"] == "blinker")
            x, y, s = blinker["x"][0], blinker["y"][0], blinker["side"]
            present = [_mask(f[y : y + s, x : x + s], blinker["color"]).sum() > s for f in frames]
            disappearances = sum(a and not b for a, b in zip(present, present[1:]))
            assert disappearances == COUNTS.index(rec["answer"]) + 1, (rec["id"], present)
        checked[rec["qtype"]] += 1
    assert checked == {"direction": 10, "which_moved": 10, "count": 10}


def test_tokenizer_texts_cover_questions_and_answers(generated):
    cfg, out = generated
    texts = set(tokenizer_texts())
    for rec, _ in _records(out["train"]):
        assert rec["answer"] in texts
        assert rec["conversations"][0]["value"].removeprefix("<video>\n") in texts


def test_npz_store_through_the_loader(tmp_path, tokenizer):
    from encoder.codec import PatchSelection
    from llava_ov.data.mixture import DataConfig, SourceConfig, build_loader, eval_items, prepare_data

    syn = _cfg(tmp_path, size=56, num_train=6, num_heldout=3, store="both", codec={"select": {"budget": 32}})
    cfg = DataConfig(
        sources=[SourceConfig(name="s", shards="synthetic:train", media_kind="video")],
        eval_sources=[SourceConfig(name="h", shards="synthetic:heldout", media_kind="video")],
        synthetic=syn,
        codec={"decode": {"num_frames": 8, "input_size": 56}, "select": {"budget": 64}},
        repeat=False,
        num_workers=0,
        max_length=256,
        max_tokens=512,
    )
    # each stored selection names its clip, not the temporary file it was cut from (same on every run)
    files = _members(prepare_data(cfg)["train"])
    metas = {k: PatchSelection.from_bytes(v).meta["path"] for k, v in files.items() if k.endswith(".npz")}
    assert metas and all(path == key[:-4] + ".mp4" for key, path in metas.items())
    loader = build_loader(cfg, tokenizer, rank=0, world_size=1)
    batches = list(loader)
    assert loader.stats.used == 6 and loader.stats.total_skipped == 0
    # store=both: the reader takes the precomputed npz (budget 32), not the mp4 (loader budget 64)
    assert {int(n) for b in batches for n in b.media.cu_seqlens.diff()} == {32}
    prompts = list(eval_items(cfg, tokenizer, rank=0, world_size=1))
    assert [p.meta["answer"] for p in prompts] == [question_for(i, list(QTYPES))[1] for i in range(3)]
    assert all(int((p.tokens.labels != -100).sum()) == 0 for p in prompts)


def test_first_frame_does_not_give_the_direction_away():
    """Every mover starts where a move of its length fits both ways along its axis, so the start
    positions of opposite directions come from the same range (the answer needs the motion)."""
    from llava_ov.data.synthetic_qa import make_record

    cfg = SyntheticQAConfig(qtypes=["direction"])
    hi = cfg.size - cfg.scene.obj
    starts: dict[str, list[int]] = {d: [] for d in DIRECTIONS}
    for i in range(80):
        rec, _ = make_record(cfg, "train", i)
        mover = next(o for o in rec["scene"]["objects"] if o["role"] == "mover")
        axis = "x" if DIRECTIONS[rec["answer"]][0] else "y"
        path = np.asarray(mover[axis])
        dist = abs(int(path[-1] - path[0]))
        assert dist >= cfg.num_frames - 1 and dist <= int(path[0]) <= hi - dist
        starts[rec["answer"]].append(int(path[0]))
    for a, b in (("left", "right"), ("up", "down")):  # opposite directions start in overlapping ranges
        assert max(starts[a]) > min(starts[b]) and max(starts[b]) > min(starts[a])
    with pytest.raises(ValueError, match="travel"):
        SyntheticQAConfig(travel=0.6).validate()


def test_precomputed_patches_are_those_the_loader_would_make(tmp_path):
    """store=both/npz: the clips are patchified with the data config's codec section (synthetic.codec
    on top), so the npz read in training equals patchify(mp4) with the loader's settings."""
    from encoder.codec import PatchSelection, patchify
    from llava_ov.data.mixture import DataConfig, SourceConfig, codec_config, prepare_data, synthetic_config

    syn = _cfg(tmp_path, size=56, num_train=6, num_heldout=0, store="both")
    source = SourceConfig(name="s", shards="synthetic:train", media_kind="video")
    cfg = DataConfig(
        sources=[source],
        synthetic=syn,
        codec={"decode": {"num_frames": 8, "input_size": 56}, "select": {"budget": 40, "min_score": 1.0}},
    )
    assert synthetic_config(cfg).codec["select"] == {"budget": 40, "min_score": 1.0}
    files = _members(prepare_data(cfg, progress=False)["train"])
    lengths = []
    for name in sorted(n for n in files if n.endswith(".npz")):
        pre = PatchSelection.from_bytes(files[name])
        mp4 = tmp_path / "clip.mp4"
        mp4.write_bytes(files[name[: -len(".npz")] + ".mp4"])
        fresh = patchify(mp4, codec_config(cfg, source))
        np.testing.assert_array_equal(pre.positions, fresh.positions)
        np.testing.assert_array_equal(pre.pixels, fresh.pixels)
        lengths.append(len(pre))
    assert len(lengths) == 6 and all(16 <= n <= 40 for n in lengths)  # 4x4 context + informative patches


def test_scene_case_names_what_the_scene_holds(tmp_path):
    from llava_ov.data.synthetic_qa import make_record, scene_case

    cfg = _cfg(tmp_path)
    cases: dict[str, set[str]] = {}
    for index in range(150):
        record, _ = make_record(cfg, "heldout", index)
        case = scene_case(record)
        cases.setdefault(record["qtype"], set()).add(case)
        objects = record["scene"]["objects"]
        moving = [len(set(o["x"])) > 1 or len(set(o["y"])) > 1 for o in objects]
        if case == "alone":
            assert len(objects) == 1
        elif case == "pair, both still":
            assert len(objects) == 2 and not any(moving)
            assert len({o["shape"] for o in objects}) == 2 and len({o["color"] for o in objects}) == 2
        elif case == "pair, target moves":
            assert [o["role"] for o, m in zip(objects, moving) if m] == ["target"]
    assert cases["color"] == {"alone", "pair, both still", "pair, target moves"}
    assert cases["direction"] == cases["count"] == {"alone", "with distractor"}
    assert cases["appeared"] == cases["which_moved"] == {"pair"}
