"""Attentive probe (llava_ov.experiments.probe, scripts/probe.py): learning, data sources, bad clips,
budget, CLI."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch

from encoder.codec import patchify
from encoder.codec.synthetic import write_video
from encoder.typed_config import merge_config
from llava_ov.data.shards import ShardWriter
from llava_ov.experiments.probe import (
    AttentiveProbe,
    ProbeConfig,
    ProbeDataConfig,
    SyntheticProbeConfig,
    folder_clips,
    generate_synthetic,
    plan_and_codec,
    run_probe,
    shard_clips,
    with_tower,
)
from llava_ov.experiments.probe.data import synthetic_frames
from llava_ov.model.budget import MediaConfig
from llava_ov.model.config import TowerConfig
from llava_ov.model.merge import TokenCounter

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: tiny clips: 56 px, 8 frames; codec input at 56 px (4 x 4 patches of 14 per frame, 128 in all), frames
#: mode 4 frames of 4 x 4 tokens: 64 LLM tokens either way
TINY_MEDIA = {"budget": 64, "mode": "auto", "clip_frames": 8, "input_size": 56, "frames": 4}
TINY_SCENE = {"size": 56, "num_frames": 8}


def tiny_config(tmp_path: Path, **updates) -> ProbeConfig:
    base = {
        "media": TINY_MEDIA,
        "synthetic": {"out_dir": str(tmp_path / "clips"), **TINY_SCENE},
        "epochs": 30,
        "batch_size": 8,
        "lr": 3e-3,
        "heads": 2,
        "progress": False,
    }
    for key, value in updates.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return merge_config(ProbeConfig(), base)


def write_clip(path: Path, label: str, index: int, task: str = "color") -> Path:
    cfg = SyntheticProbeConfig(task=task, classes=[label], **TINY_SCENE)
    _, frames = synthetic_frames(cfg, "train", index)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps=8, gop=8)
    return path


# ----------------------------------------------------------------------------- learning


def test_probe_learns_a_separable_task(tmp_path):
    """Two colours of a large static object, 10 + 5 tiny clips per class: the probe on a random-init
    frozen tower separates them on held-out clips (chance 0.5)."""
    cfg = tiny_config(
        tmp_path,
        synthetic={
            "task": "color",
            "classes": ["red", "blue"],
            "num_train": 10,
            "num_heldout": 5,
            "object_size": 0.6,
        },
        epochs=60,
    )
    result = run_probe(cfg)
    assert result["classes"] == ["red", "blue"]
    assert (result["n_train"], result["n_heldout"], result["chance"]) == (20, 10, 0.5)
    assert result["top1"] >= 0.9, result
    assert set(result["per_class"]) == {"red", "blue"}
    assert (result["mode"], result["llm_tokens"], result["tower_tokens"]) == ("codec", 64, 64)
    again = run_probe(cfg)  # seeded: the same numbers, and the cached clips are reused
    assert (again["top1"], again["final_loss"]) == (result["top1"], result["final_loss"])


def test_pooling_equals_direct_multihead_attention():
    """The cheap pooling order equals one query attending over projected keys / values."""
    torch.manual_seed(0)
    probe = AttentiveProbe(16, 3, heads=4)
    for p in probe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, seq = torch.randn(11, 16), torch.tensor([0] * 4 + [1] * 7)
    got = probe.pool(x, seq, 2)
    xn = torch.nn.functional.layer_norm(x, (16,))
    q = probe.q_proj(probe.query).view(4, 4)
    k, v = (xn @ probe.k_proj.weight.T).view(-1, 4, 4), probe.v_proj(xn).view(-1, 4, 4)
    want = []
    for i in range(2):
        ks, vs = k[seq == i], v[seq == i]
        a = torch.softmax((ks * q).sum(-1) / 2.0, dim=0)  # [n, H]
        want.append(probe.out_proj((a[..., None] * vs).sum(0).reshape(16)))
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="divide"):
        AttentiveProbe(10, 2, heads=4)


# ----------------------------------------------------------------------------- data sources


def test_folder_per_class_loading(tmp_path):
    root = tmp_path / "videos"
    for split, n in (("train", 3), ("heldout", 2)):
        for label in ("red", "blue"):
            for i in range(n):
                write_clip(root / split / label / f"{i}.mp4", label, i)
    write_clip(root / "heldout" / "green" / "0.mp4", "green", 0)  # a class train does not have
    (root / "train" / "red" / "notes.txt").write_text("not a video")
    data = folder_clips(root, ProbeDataConfig(source="folder", root=str(root)))
    assert data.classes == ["blue", "red"]
    assert [c.label for c in data.clips["train"]] == ["blue"] * 3 + ["red"] * 3
    assert {c.split for c in data.clips["train"]} == {"train"}
    assert len(data.clips["heldout"]) == 4
    assert [(s.key, s.reason) for s in data.skipped] == [("heldout/green/0.mp4", "bad_sample")]
    capped = folder_clips(
        root, ProbeDataConfig(source="folder", root=str(root), max_per_class=1, classes=["red", "blue"])
    )
    assert capped.classes == ["red", "blue"] and len(capped.clips["train"]) == 2
    with pytest.raises(ValueError, match="no train/ folder"):
        folder_clips(root / "train", ProbeDataConfig(source="folder", root="x"))


def test_shard_loading(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", "red", 0).read_bytes()
    for split in ("train", "heldout"):
        with ShardWriter(tmp_path / split, "shard") as w:
            for i, label in enumerate(["red", "blue", "red"]):
                w.write(f"{split}_{i}", {"label": label}, [("mp4", clip)])
            w.write(f"{split}_nolabel", {"caption": "x"}, [("mp4", clip)])
            w.write(f"{split}_novideo", {"class": "red"}, [("jpg", b"\xff\xd8")])
    pattern = str(tmp_path / "{split}" / "shard-*.tar")
    data = shard_clips(pattern, ProbeDataConfig(source="shards", shards=pattern))
    assert data.classes == ["blue", "red"]
    assert [c.key for c in data.clips["heldout"]] == ["heldout_0", "heldout_1", "heldout_2"]
    assert all(c.data == clip and c.suffix == ".mp4" for c in data.clips["train"])
    assert sorted(s.reason for s in data.skipped) == ["bad_json"] * 2 + ["missing_media"] * 2

    with ShardWriter(tmp_path / "mixed", "shard") as w:  # no {split}: the JSON's split field, else a hash
        for i in range(40):
            record = {"class": i % 2} | ({"split": "test" if i < 4 else "train"} if i < 8 else {})
            w.write(f"k{i}", record, [("mp4", clip)])
    mixed_cfg = ProbeDataConfig(source="shards", shards=str(tmp_path / "mixed"), heldout_fraction=0.3)
    mixed = shard_clips(mixed_cfg.shards, mixed_cfg)
    assert mixed.classes == ["0", "1"]
    held = {c.key for c in mixed.clips["heldout"]}
    assert {"k0", "k1", "k2", "k3"} <= held and not held & {"k4", "k5", "k6", "k7"}
    assert 4 < len(held) < 30


def test_synthetic_set_is_cached_and_deterministic(tmp_path):
    cfg = SyntheticProbeConfig(out_dir=str(tmp_path / "a"), num_train=2, num_heldout=1, **TINY_SCENE)
    root = generate_synthetic(cfg, progress=False)
    files = sorted(p.relative_to(root) for p in root.rglob("*.mp4"))
    assert len(files) == 12 and {f.parts[1] for f in files} == {"left", "right", "up", "down"}
    stamp = (root / "manifest.json").stat().st_mtime_ns
    assert generate_synthetic(cfg, progress=False) == root
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    other = generate_synthetic(merge_config(cfg, {"out_dir": str(tmp_path / "b")}), progress=False)
    assert sorted(p.relative_to(other) for p in other.rglob("*.mp4")) == files
    # the content is a function of (seed, split, index); compared before encoding, since libx264 via
    # encoder.codec.synthetic.write_video is not always byte-identical for identical frames
    label, frames = synthetic_frames(cfg, "heldout", 3)
    again = synthetic_frames(cfg, "heldout", 3)
    assert label == again[0] == "down" and (frames == again[1]).all()
    assert not (frames == synthetic_frames(merge_config(cfg, {"heldout_seed": 7}), "heldout", 3)[1]).all()


def test_corrupt_clip_is_skipped_and_counted(tmp_path, caplog):
    root = tmp_path / "videos"
    for split, n in (("train", 3), ("heldout", 2)):
        for label in ("red", "blue"):
            for i in range(n):
                write_clip(root / split / label / f"{i}.mp4", label, i)
    (root / "train" / "red" / "bad.mp4").write_bytes(b"\x00not a video" * 50)
    cfg = tiny_config(tmp_path, data={"source": "folder", "root": str(root)}, epochs=2)
    with caplog.at_level(logging.WARNING, logger="llava_ov.probe"):
        result = run_probe(cfg)
    assert result["skipped"] == {"corrupt_media": 1}
    assert result["skipped_keys"] == ["train/red/bad.mp4"]
    assert (result["n_train"], result["n_heldout"]) == (6, 4)
    lines = [r.getMessage() for r in caplog.records if "skipped clip" in r.getMessage()]
    assert len(lines) == 1 and "bad.mp4" in lines[0] and "\n" not in lines[0]


# ----------------------------------------------------------------------------- equal budget


def _towers() -> list[tuple[str, str]]:
    runs = [
        ("ov_encoder", "codec"),
        ("ov_encoder", "random"),
        ("ov_encoder", "frames"),
        ("siglip2", "frames"),
    ]
    if importlib.util.find_spec("llava_ov.model.towers.qwen3_vit") is not None:
        runs.append(("qwen3_vit", "frames"))
    return runs


def test_equal_budget_gives_equal_llm_tokens(tmp_path):
    """The embedded default budget: every tower / mode gets 512 LLM tokens per clip, and a patchified
    16-frame 112-px clip really becomes that many tokens; the tower's own token count is reported."""
    clip_cfg = SyntheticProbeConfig(classes=["left"])
    _, frames = synthetic_frames(clip_cfg, "train", 0)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=8, gop=16)
    tower_tokens = {}
    for name, mode in _towers():
        try:
            cfg = merge_config(with_tower(ProbeConfig(), name), {"media": {"mode": mode}})
        except ImportError as e:  # a transformers build without the tower's model class
            pytest.skip(f"{name}: {e}")
        spec, plan, codec = plan_and_codec(cfg)
        assert plan.llm_tokens == 512, (name, mode, plan)
        sel = patchify(path, codec)
        assert TokenCounter(1, spec.frames_per_token, spec.merge)(sel) == 512, (name, mode)
        tower_tokens[(name, mode)] = plan.tower_tokens
    assert tower_tokens[("ov_encoder", "codec")] == tower_tokens[("siglip2", "frames")] == 512
    if ("qwen3_vit", "frames") in tower_tokens:
        assert tower_tokens[("qwen3_vit", "frames")] == 2048  # 2x2 patches and 2 frames per token
    assert merge_config(ProbeConfig(), {"media": {"budget": 256}}).media == MediaConfig(256, "auto", 16, 112)


def test_config_is_strict():
    from encoder.typed_config import ConfigError

    with pytest.raises(ConfigError, match="unknown config key"):
        merge_config(ProbeConfig(), {"epoch": 3})
    with pytest.raises(ConfigError, match="codec"):
        merge_config(ProbeConfig(), {"tower": TowerConfig(name="siglip2"), "media": {"mode": "codec"}})
    with pytest.raises(ConfigError, match="data.root"):
        merge_config(ProbeConfig(), {"data": {"source": "folder"}})


# ----------------------------------------------------------------------------- CLI


def _cli():
    spec = importlib.util.spec_from_file_location("probe_cli", ROOT / "scripts" / "probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_cli_args(tmp_path: Path) -> list[str]:
    media = [f"media.{k}={v}" for k, v in TINY_MEDIA.items() if k not in ("budget", "mode")]
    scene = [f"synthetic.{k}={v}" for k, v in TINY_SCENE.items()]
    return [
        "--budget",
        "64",
        "--epochs",
        "3",
        "--quiet",
        "--set",
        *media,
        *scene,
        f"synthetic.out_dir={tmp_path / 'clips'}",
        "synthetic.num_train=2",
        "synthetic.num_heldout=1",
        "batch_size=4",
        "heads=2",
    ]


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli().main([*tiny_cli_args(tmp_path), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    keys = {
        "tower",
        "mode",
        "budget",
        "llm_tokens",
        "tower_tokens",
        "top1",
        "per_class",
        "chance",
        "n_train",
        "n_heldout",
        "seconds",
    }
    assert keys <= set(result)
    assert (result["tower"], result["mode"], result["budget"]) == ("ov_encoder", "codec", 64)
    assert (result["n_train"], result["n_heldout"]) == (8, 4)
    assert result["per_class"].keys() == {"left", "right", "up", "down"} and result["chance"] == 0.25
    table = capsys.readouterr().out
    assert "top1" in table and "ov_encoder" in table


def test_cli_shards(tmp_path, capsys):
    """``--shards`` with a {split} pattern: labels from the JSON, an undecodable member skipped."""
    for split, n in (("train", 3), ("heldout", 2)):
        with ShardWriter(tmp_path / "shards" / split, "shard") as w:
            for label in ("red", "blue"):
                for i in range(n):
                    clip = write_clip(tmp_path / "tmp.mp4", label, i).read_bytes()
                    w.write(f"{split}_{label}_{i}", {"label": label}, [("mp4", clip)])
            w.write(f"{split}_broken", {"label": "red"}, [("mp4", b"garbage")])
    out = tmp_path / "run"
    pattern = str(tmp_path / "shards" / "{split}" / "shard-*.tar")
    assert _cli().main([*tiny_cli_args(tmp_path), "--shards", pattern, "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert (result["classes"], result["n_train"], result["n_heldout"]) == (["blue", "red"], 6, 4)
    assert result["skipped"] == {"corrupt_media": 2}


def test_cli_compare(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = [
        *tiny_cli_args(tmp_path),
        "--out",
        str(out),
        "--compare",
        "ov_encoder:codec",
        "ov_encoder:frames",
        "siglip2",
    ]
    assert _cli().main(args) == 0
    rows = json.loads((out / "comparison.json").read_text())
    assert [(r["tower"], r["mode"]) for r in rows] == [
        ("ov_encoder", "codec"),
        ("ov_encoder", "frames"),
        ("siglip2", "frames"),
    ]
    assert {r["llm_tokens"] for r in rows} == {64}
    assert all((out / r["name"] / "result.json").is_file() for r in rows)


def test_cli_errors(tmp_path, capsys):
    cli = _cli()
    assert cli.main(["--set", "nope=1"]) == 2
    assert cli.main(["--tower", "siglip2", "--mode", "codec"]) == 2
    assert cli.main(["--data", str(tmp_path / "missing"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "unknown config key" in err and "codec" in err and "missing" in err
