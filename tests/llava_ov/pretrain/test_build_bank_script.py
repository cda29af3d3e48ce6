"""scripts/build_concept_bank.py on real shards of generated clips: pixels, OV-Encoder and npy teachers."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.pretrain.bank import ConceptBank
from llava_ov.data.synthetic_qa import SyntheticQAConfig, generate_synthetic_qa
from llava_ov.pretrain.features import FeatureStats, TeacherConfig, embedding_stream

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    cfg = SyntheticQAConfig(
        out_dir=str(out), num_train=24, num_heldout=4, size=64, num_frames=8, workers=1, samples_per_shard=10
    )
    return [str(p) for p in generate_synthetic_qa(cfg, progress=False)["train"]]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_concept_bank.py"), "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


def one_shard_bank(shard: str, out: Path, *teacher: str, input_size: int) -> subprocess.CompletedProcess:
    """A bank of 3 centres and top-1 labels of one shard's clips, 2 frames each, by ``teacher`` (its
    arguments)."""
    args = ["--centres", "3", "--topk", "1", "--frames", "2", "--input-size", str(input_size)]
    return run("--shards", shard, "--out", str(out), *teacher, *args)


def npy_bank(tmp_path: Path, out: str) -> subprocess.CompletedProcess:
    """A bank of 3 centres and top-2 labels of tmp_path/e.npy, keyed by the lines of tmp_path/k.txt."""
    npy = ["--teacher", "npy", "--teacher-path", str(tmp_path / "e.npy"), "--keys", str(tmp_path / "k.txt")]
    return run(*npy, "--out", str(tmp_path / out), "--centres", "3", "--topk", "2")


def test_pixels_teacher_concatenates_frames_in_order(shards):
    cfg = TeacherConfig(frames=4, input_size=32, pool=2)
    stats = FeatureStats()
    blocks = list(embedding_stream(shards, cfg, stats)())
    keys = [k for ks, _ in blocks for k in ks]
    x = np.concatenate([b for _, b in blocks])
    assert len(keys) == 24 == stats.used and x.shape == (24, 4 * 2 * 2 * 3)
    per_frame = x.reshape(24, 4, 12)
    assert not np.allclose(per_frame[:, 0], per_frame[:, -1])  # time order kept: first != last frame


def test_centred_pixels_keep_only_what_changes(shards):
    plain = np.concatenate(
        [b for _, b in embedding_stream(shards[:1], TeacherConfig(frames=4, input_size=32, pool=2))()]
    )
    cfg = TeacherConfig(frames=4, input_size=32, pool=2, centre=True)
    centred = np.concatenate([b for _, b in embedding_stream(shards[:1], cfg)()]).reshape(-1, 4, 12)
    np.testing.assert_allclose(centred.sum(1), 0.0, atol=1e-5)  # each clip's mean frame is removed
    np.testing.assert_allclose(
        centred, plain.reshape(-1, 4, 12) - plain.reshape(-1, 4, 12).mean(1, keepdims=True), atol=1e-5
    )


def _mover_directions(shards: list[str]) -> dict[str, str]:
    """key -> direction of the clip's single mover (clips with one mover that stays in view)."""
    out = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if not m.name.endswith(".json"):
                    continue
                objs = json.loads(tar.extractfile(m).read())["scene"]["objects"]
                movers = [o for o in objs if o.get("role") == "mover" and all(o["visible"])]
                if len(movers) == 1 and len([o for o in objs if o.get("role") == "mover"]) == 1:
                    dx, dy = movers[0]["x"][-1] - movers[0]["x"][0], movers[0]["y"][-1] - movers[0]["y"][0]
                    horizontal = abs(dx) >= abs(dy)
                    out[m.name[: -len(".json")]] = (
                        ("right" if dx > 0 else "left") if horizontal else ("down" if dy > 0 else "up")
                    )
    return out


def test_motion_teacher_bins_the_direction_of_movement(shards):
    """The codec motion field's histogram peaks at the mover's direction (left 0, up 2, right 4, down 6)."""
    cfg = TeacherConfig(kind="motion", frames=8, input_size=64, segments=2)
    stats = FeatureStats()
    blocks = list(embedding_stream(shards, cfg, stats)())
    emb = dict(zip([k for ks, _ in blocks for k in ks], np.concatenate([b for _, b in blocks])))
    assert stats.used == 24 and next(iter(emb.values())).shape == (2 * 8 + 1,)
    for e in emb.values():  # normalised by the clip's total motion, or the "still" flag alone
        assert np.isclose(e[:-1].sum(), 1.0, atol=1e-4) or (e[-1] == 1.0 and e[:-1].sum() == 0.0)
    expected = {"left": 0, "up": 2, "right": 4, "down": 6}
    directions = _mover_directions(shards)
    assert len(directions) >= 6
    hits = [int(emb[k][:-1].reshape(2, 8).sum(0).argmax()) == expected[d] for k, d in directions.items()]
    assert sum(hits) >= 0.9 * len(hits), hits


def test_script_builds_a_bank_keyed_by_sample(shards, tmp_path):
    res = run(
        "--shards",
        shards[0],
        shards[1],
        "--out",
        str(tmp_path / "bank"),
        "--centres",
        "4",
        "--topk",
        "2",
        "--backend",
        "torch",
        "--frames",
        "4",
        "--input-size",
        "32",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    bank = ConceptBank(tmp_path / "bank")
    assert len(bank) == 20 and bank.num_centres == 4 and bank.labels.shape == (20, 2)  # two shards of 10
    summary = json.loads((tmp_path / "bank" / "bank.json").read_text())
    assert (
        summary["teacher"] == "pixels"
        and summary["skipped_samples"] == {}
        and "20 samples → 4 centres" in res.stdout
    )
    assert sorted((tmp_path / "bank.features").glob("*.npy"))  # the teacher's embeddings are kept


def test_ov_encoder_and_npy_teachers(shards, tmp_path):
    from encoder.model import OVEncoder

    OVEncoder.from_name("debug").save_pretrained(tmp_path / "enc")
    teacher = ["--teacher", "ov_encoder", "--teacher-path", str(tmp_path / "enc")]
    res = one_shard_bank(shards[0], tmp_path / "b1", *teacher, input_size=28)
    assert res.returncode == 0, res.stderr[-2000:]
    bank = ConceptBank(tmp_path / "b1")
    assert bank.dim == 2 * OVEncoder.from_name("debug").config.hidden_size  # 2 frames concatenated
    np.save(tmp_path / "e.npy", np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32))
    (tmp_path / "k.txt").write_text("".join(f"k{i}\n" for i in range(12)))
    res = npy_bank(tmp_path, "b2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert ConceptBank(tmp_path / "b2").labels_for("k11").shape == (2,)
    (tmp_path / "k.txt").write_text("k0\n")
    res = npy_bank(tmp_path, "b3")
    assert res.returncode == 2 and "has 1 keys but" in res.stderr


def test_transformers_tower_teacher(shards, tmp_path):
    """A tiny random SigLIP2 saved in transformers' layout, loaded strictly: per-frame token means,
    concatenated."""
    from llava_ov.model import TowerConfig, build_tower

    torch.manual_seed(0)
    build_tower(TowerConfig(name="siglip2", size="debug")).save_pretrained(tmp_path / "siglip2")
    teacher = ["--teacher", "tower", "--tower", "siglip2", "--teacher-path", str(tmp_path / "siglip2")]
    res = one_shard_bank(shards[0], tmp_path / "b", *teacher, input_size=32)
    assert res.returncode == 0, res.stderr[-2000:]
    bank = ConceptBank(tmp_path / "b")
    width = json.loads((tmp_path / "siglip2" / "config.json").read_text())["hidden_size"]
    assert bank.dim == 2 * width and json.loads((tmp_path / "b" / "bank.json").read_text())[
        "teacher"
    ].startswith("tower:")


def test_bad_settings_fail_before_any_work(tmp_path):
    res = run("--teacher", "clip", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "teacher.kind must be one of" in res.stderr
    res = run("--centres", "4", "--topk", "9", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "topk 9 > num_centres 4" in res.stderr
