"""deepspeed scripts/pretrain_encoder.py: the loss falls, resume is exact (1 and 2 ranks), 2 → 1 ranks
re-shards the centres, an incomplete checkpoint falls back, the export is an LMM tower, bad banks fail."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from pretrain_support import DEFAULT_YAML, copy_checkpoint, launch, records, tiny_config, tiny_overrides
from safetensors.torch import load_file

from encoder.typed_config import ConfigError
from llava_ov.pretrain.run import pretrain


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("pretrain_data")


@pytest.fixture(scope="module")
def bank(data_root, tmp_path_factory):
    """The bank (built by a first 1-step run), shared by the tests."""
    out = tmp_path_factory.mktemp("bank_run")
    pretrain(
        tiny_config(out, data_root, data_root / "bank", **{"pretrain.max_steps": 1, "checkpoint.every": 0})
    )
    return data_root / "bank"


def weights(final) -> dict[str, torch.Tensor]:
    return load_file(str(final / "model.safetensors"))


def test_the_bank_is_built_and_the_loss_falls(data_root, bank, tmp_path):
    summary = json.loads((bank / "bank.json").read_text())
    assert summary["num_samples"] == 32 and summary["num_centres"] == 8 and summary["teacher"] == "pixels"
    res = pretrain(
        tiny_config(
            tmp_path,
            data_root,
            bank,
            **{"pretrain.max_steps": 30, "checkpoint.every": 0, "pretrain.optim.lr": 3e-3},
        )
    )
    recs = records(tmp_path)
    assert [r["step"] for r in recs] == list(range(1, 31)) and all(r["samples"] == 4 for r in recs)
    first, last = np.mean([r["loss"] for r in recs[:5]]), np.mean([r["loss"] for r in recs[-5:]])
    assert last < 0.8 * first, (first, last)
    assert sum(r.get(f"mode/{m}", 0) * 4 for r in recs for m in ("codec", "frames", "collage")) == 120
    assert {m for r in recs for m in ("codec", "frames", "collage") if r.get(f"mode/{m}")} == {
        "codec",
        "frames",
        "collage",
    }
    assert (res.export / "model.safetensors").is_file() and (res.export / "pretrain.json").is_file()


def test_two_heads_each_with_its_bank_weight_and_lr(data_root, bank, tmp_path):
    """Two sources (direction clips / the rest), one head each: both losses logged, their own LRs."""
    sources = (
        "[{name: dirs, shards: 'synthetic:train', where: {qtype: direction}}, "
        "{name: rest, shards: 'synthetic:train', where: {qtype: [color, count, appeared, which_moved]}}]"
    )
    heads = (
        f"{{video: {{bank: {bank}, sources: [dirs], num_labels: 2, lr: 0.002}}, "
        f"other: {{bank: {bank}, sources: [rest], num_labels: 1, weight: 0.5, lr: 0.0005}}}}"
    )
    cfg = tiny_config(
        tmp_path,
        data_root,
        bank,
        **{
            "data.sources": sources,
            "pretrain.max_steps": 3,
            "checkpoint.every": 0,
            "pretrain.optim.warmup_steps": 0,
            "pretrain.optim.schedule": "constant",
        },
    )
    cfg = dataclasses.replace(cfg, heads=yaml.safe_load(heads))
    cfg.validate()
    pretrain(cfg)
    recs = records(tmp_path)
    assert all("loss/video" in r and "loss/other" in r for r in recs)
    assert (
        recs[0]["lr/head/video"] == 0.002
        and recs[0]["lr/head/other"] == 0.0005
        and recs[0]["lr/encoder"] == 1e-3
    )


def test_still_images_mix_in_with_their_own_head(data_root, bank, tmp_path):
    """An image source (JPEG shards) with an OCR-style label bank beside the clips: images take the image
    mode and their own head; both heads learn in the same steps."""
    import io

    from PIL import Image

    from encoder.pretrain.bank import write_label_bank
    from llava_ov.data.shards import ShardWriter

    rng = np.random.default_rng(0)
    keys = []
    with ShardWriter(tmp_path / "img", "img", 8) as w:
        for i in range(16):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (42, 56, 3), dtype=np.uint8)).save(buf, format="JPEG")
            keys.append(w.write(f"img{i:03d}", {"id": i}, [("jpg", buf.getvalue())]))
    write_label_bank(tmp_path / "words", keys, [[i % 5, (i + 1) % 5] for i in range(16)], num_classes=5)
    sources = (
        f"[{{name: clips, shards: 'synthetic:train', weight: 1.0}}, "
        f"{{name: pages, shards: '{tmp_path / 'img'}/img-{{000000..000001}}.tar', "
        "weight: 1.0, media_kind: image}]"
    )
    heads = (
        f"{{video: {{bank: {bank}, sources: [clips], num_labels: 2}}, "
        f"ocr: {{bank: {tmp_path / 'words'}, sources: [pages], num_labels: 2, sample_rate: 1.0, lr: 0.002}}}}"
    )
    cfg = tiny_config(
        tmp_path / "run",
        data_root,
        bank,
        **{"data.sources": sources, "pretrain.max_steps": 4, "checkpoint.every": 0},
    )
    cfg = dataclasses.replace(cfg, heads=yaml.safe_load(heads))
    cfg.validate()
    pretrain(cfg)
    recs = records(tmp_path / "run")
    assert (
        sum(r.get("mode/image", 0) for r in recs) > 0
        and sum(r.get("mode/codec", 0) + r.get("mode/frames", 0) + r.get("mode/collage", 0) for r in recs) > 0
    )
    assert all("loss/ocr" in r and "loss/video" in r for r in recs) and recs[0]["lr/head/ocr"] == 0.002


def test_exact_resume_one_rank(data_root, bank, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    pretrain(tiny_config(full, data_root, bank))
    copy_checkpoint(full, resumed, 3)
    pretrain(tiny_config(resumed, data_root, bank))
    a, b = records(full), records(resumed)
    assert [r["step"] for r in b] == [4, 5, 6]  # it started from the checkpoint
    for x, y in zip(a[3:], b):
        assert x["loss"] == y["loss"] and x["loss/video"] == y["loss/video"]  # bitwise on CPU
        assert {k: v for k, v in x.items() if k.startswith("lr/")} == {
            k: v for k, v in y.items() if k.startswith("lr/")
        }
    wa, wb = weights(full / "pretrain" / "final"), weights(resumed / "pretrain" / "final")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ha = torch.load(full / "pretrain/checkpoints/step_00000003/head_video_rank00000.pt", weights_only=False)
    assert ha["exp_avg"] is not None and ha["step"] == 3.0  # the centres' AdamW moments are checkpointed


def test_incomplete_newest_checkpoint_falls_back_with_a_warning(data_root, bank, tmp_path, capfd):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    pretrain(tiny_config(full, data_root, bank, **{"checkpoint.every": 2, "checkpoint.keep": 3}))
    copy_checkpoint(full, resumed, 2)
    copy_checkpoint(full, resumed, 4)
    (resumed / "pretrain/checkpoints/step_00000004/trainer_state.json").unlink()  # killed while writing
    capfd.readouterr()
    pretrain(tiny_config(resumed, data_root, bank, **{"checkpoint.every": 2, "checkpoint.keep": 3}))
    assert [r["step"] for r in records(resumed)] == [3, 4, 5, 6]
    err = capfd.readouterr().err  # the trainer's logging goes to stderr
    assert "['step_00000004']" in err and "incomplete" in err and "resuming from" in err
    a = records(full)
    assert [r["loss"] for r in a[2:]] == [r["loss"] for r in records(resumed)]


def test_two_ranks_resume_and_reshard_to_one(data_root, bank, tmp_path):
    full, resumed, single = tmp_path / "full", tmp_path / "resumed", tmp_path / "single"
    args = ["--config", str(DEFAULT_YAML)]
    zero2 = {"deepspeed.zero_stage": 2}
    proc = launch([*args, *tiny_overrides(full, data_root, bank, **zero2)], 2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = records(full)
    assert "2 rank(s)" in proc.stdout and "ZeRO-2" in proc.stdout and all(r["samples"] == 8 for r in a)
    ck = full / "pretrain/checkpoints/step_00000003"
    shards = [torch.load(ck / f"head_video_rank{r:05d}.pt", weights_only=False) for r in (0, 1)]
    assert [(s["start"], s["end"]) for s in shards] == [(0, 4), (4, 8)]
    copy_checkpoint(full, resumed, 3)
    proc = launch([*args, *tiny_overrides(resumed, data_root, bank, **zero2)], 2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    b = records(resumed)
    assert [r["step"] for r in b] == [4, 5, 6]
    for x, y in zip(a[3:], b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6, abs=1e-7)
    # 2 -> 1 rank: every centre of the two shards is in the single rank's head after loading
    copy_checkpoint(full, single, 3)
    cfg = tiny_config(single, data_root, bank, **{"pretrain.max_steps": 4} | zero2)
    from llava_ov.pretrain.task import PretrainTask
    from llava_ov.train import distributed as D

    task = PretrainTask(cfg)
    env = D.DistEnv(0, 1, 0, torch.device("cpu"), "gloo", torch.float32)
    task.build(env)
    task.load_extra(ck, env, json.loads((ck / "trainer_state.json").read_text()))
    head = task.heads.heads["video"]
    torch.testing.assert_close(head.weight.detach(), torch.cat([s["weight"] for s in shards]), rtol=0, atol=0)
    st = task.heads.optimizers["video"].state[head.weight]
    torch.testing.assert_close(st["exp_avg"], torch.cat([s["exp_avg"] for s in shards]), rtol=0, atol=0)
    res = pretrain(cfg)  # and the run itself resumes from the 2-rank checkpoint on 1 rank
    assert [r["step"] for r in records(single)] == [4] and res.steps == 4


def test_the_export_is_an_lmm_tower(data_root, bank, tmp_path):
    from llava_ov.model import TowerConfig
    from llava_ov.model.towers import build_tower

    res = pretrain(tiny_config(tmp_path, data_root, bank, **{"pretrain.max_steps": 2, "checkpoint.every": 0}))
    tower = build_tower(TowerConfig(name="ov_encoder", path=str(res.export), output_layer=-1))
    saved = weights(res.export)
    got = {k: v for k, v in tower.state_dict().items()}
    matched = [k for k in saved if any(g.endswith(k) and torch.equal(got[g], saved[k]) for g in got)]
    assert len(matched) == len(saved)  # every pretrained tensor is in the tower, bit-exact
    assert tower.encoder.config.abs_pos_embed == "sincos3d"  # the default student's positions come along


def test_a_bank_of_other_data_fails_before_any_step(data_root, bank, tmp_path):
    from encoder.pretrain.bank import build_bank
    from encoder.pretrain.kmeans import KMeansConfig

    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    other = tmp_path / "other_bank"
    build_bank(
        lambda: [([f"x{i}" for i in range(20)], x)],
        KMeansConfig(num_centres=4, topk=2, backend="torch"),
        other,
        progress=False,
    )
    with pytest.raises(ConfigError, match="does not match the data"):
        pretrain(tiny_config(tmp_path / "run", data_root, other, **{"heads.video.build": "{}"}))
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or records(tmp_path / "run") == []
    with pytest.raises(ConfigError, match="heads.video.bank=.*missing.*: no such concept bank folder"):
        tiny_config(
            tmp_path / "run2", data_root, tmp_path / "missing", **{"heads.video.build": "{}"}
        )  # at load
    from llava_ov.pretrain.config import load_pretrain_config

    with pytest.raises(ConfigError, match="heads is empty"):
        load_pretrain_config(None, [f"output_dir={tmp_path / 'run3'}"])
