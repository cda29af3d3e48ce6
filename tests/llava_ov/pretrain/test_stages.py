"""Pretraining feeding the rest: the default recipe, a short run followed by its probes, the comparison's
pretrained variant, and the three stages in one command (scripts/run_stages.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from pretrain_support import DEFAULT_YAML, ROOT, tiny_config, tiny_overrides

from llava_ov.experiments.compare import EXPORT_SCRATCH, PRETRAINED, VARIANTS, CompareConfig, run_overrides
from llava_ov.model.towers import build_tower
from llava_ov.pretrain.config import load_pretrain_config
from llava_ov.pretrain.run import pretrain
from llava_ov.train.config import load_train_config

TRAIN_YAML = ROOT / "configs" / "train" / "default.yaml"
TINY_PROBE = (
    "{synthetic: {num_train: 2, num_heldout: 1, size: 56, num_frames: 8, out_dir: OUT}, "
    "media: {budget: 64, clip_frames: 8, input_size: 56}, epochs: 2, batch_size: 4, threads: 1}"
)


def test_the_default_recipe_loads_and_validates():
    cfg = load_pretrain_config(DEFAULT_YAML)
    build = cfg.heads["video"].build
    assert build is not None and build.teacher in ("pixels", "motion")
    assert cfg.probe.enabled and cfg.probe.tasks == ["direction", "color"]
    with pytest.raises(Exception, match="probe.tasks"):
        load_pretrain_config(DEFAULT_YAML, ["probe.tasks=[direction, size]"])
    with pytest.raises(Exception, match="epoch"):  # the probe's settings are checked at load, strictly
        load_pretrain_config(DEFAULT_YAML, ["probe.config.epoch=3"])
    with pytest.raises(Exception, match="max_sampels"):
        load_pretrain_config(DEFAULT_YAML, ["data.max_sampels=3"])


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A 4-step run on the tiny clips with a motion bank, then both probes: (run dir, result)."""
    out = tmp_path_factory.mktemp("stage_run")
    extra = {
        "pretrain.max_steps": 4,
        "checkpoint.every": 0,
        "heads.video.build": "{teacher: motion, frames: 8, input_size: 56, segments: 2, centres: 4, topk: 2}",
        "probe.enabled": True,
        "probe.config": TINY_PROBE.replace("OUT", str(out / "probe_clips" / "motion")),
    }
    res = pretrain(tiny_config(out, out / "data", out / "bank", **extra))
    return out, res


def test_a_short_run_then_its_probes(export):
    out, res = export
    bank = json.loads((out / "bank" / "bank.json").read_text())
    assert bank["num_centres"] == 4 and bank["teacher"] == "motion-2x8"
    summary = json.loads((out / "pretrain" / "probe.json").read_text())
    assert set(summary["tasks"]) == {"direction", "color"}
    for r in summary["tasks"].values():
        for kind in ("pretrained", "random"):
            assert 0.0 <= r[kind]["accuracy"] <= 1.0 and r[kind]["n_heldout"] == len(r["classes"])
    assert (out / "probe_clips" / "motion_color").is_dir()  # each task's clips in their own folder
    assert res.eval == summary


def test_the_pretrained_variant_uses_the_export(export, tmp_path):
    out, _ = export
    final = out / "pretrain" / "final"
    missing = CompareConfig(out=tmp_path, variants=(*VARIANTS[:1], PRETRAINED), pretrained=tmp_path / "none")
    with pytest.raises(RuntimeError, match="no encoder pretraining export"):
        missing.check()
    cfg = CompareConfig(out=tmp_path, variants=(VARIANTS[0], PRETRAINED), pretrained=final)
    cfg.check()
    codec = dict(a.split("=", 1) for a in run_overrides(cfg, VARIANTS[0], 128, 0))
    pre = dict(a.split("=", 1) for a in run_overrides(cfg, PRETRAINED, 128, 0))
    assert pre.pop("model.tower.path") == str(final) and "model.tower.path" not in codec
    assert {k: v for k, v in pre.items() if k != "output_dir"} == {
        k: v for k, v in codec.items() if k != "output_dir"
    }  # everything else as the codec row
    run_cfg = load_train_config(TRAIN_YAML, run_overrides(cfg, PRETRAINED, 128, 0))
    assert run_cfg.model.tower.path == str(final)
    tower = build_tower(run_cfg.model.tower)
    assert tower.spec.patch_size == 14
    # its baseline: the export's architecture (abs_pos_embed included) at random init, else the codec row
    scratch = run_overrides(cfg, EXPORT_SCRATCH, 128, 0)
    assert "model.tower.path" not in dict(a.split("=", 1) for a in scratch)
    fresh = build_tower(load_train_config(TRAIN_YAML, scratch).model.tower)
    assert fresh.encoder.config == tower.encoder.config and fresh.encoder.config.abs_pos_embed == "sincos3d"
    saved = {k: v for k, v in tower.encoder.state_dict().items()}
    assert any(not torch.equal(v, saved[k]) for k, v in fresh.encoder.state_dict().items())


@pytest.mark.slow
def test_three_stages_in_one_command(tmp_path):
    """pretrain (tiny) → align + sft on its export (tiny LLM) → lmms-eval's local motion-QA task."""
    pytest.importorskip("lmms_eval")
    out = tmp_path / "stages"
    pre = tiny_overrides(out / "ignored", tmp_path / "data", tmp_path / "bank", **{"pretrain.max_steps": 3})
    pre = [o for o in pre if not o.startswith("output_dir=")]
    lmm = [
        f"data.synthetic.out_dir={tmp_path / 'lmm_data'}",
        "data.synthetic.num_train=24",
        "data.synthetic.num_heldout=8",
        "data.synthetic.workers=1",
        "data.num_workers=0",
        "data.shuffle_buffer=8",
        "model.llm.from_scratch={hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16}",
        "align.max_steps=2",
        "sft.max_steps=3",
        "log.progress=false",
        "eval.max_new_tokens=2",
    ]
    cmd = [sys.executable, str(ROOT / "scripts" / "run_stages.py"), "--out", str(out), "--pretrain", *pre]
    cmd += ["--lmm", *lmm, "--eval-tasks", "llava_ov_motion_qa", "--eval-args=--limit 4"]
    # the caller's own rendezvous (here: a port it holds) must not leak into the stages
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(holder.getsockname()[1]))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    finally:
        holder.close()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "stages.json").read_text())
    export = out / "pretrain" / "pretrain" / "final"
    saved = (out / "lmm" / "config.yaml").read_text()
    assert f"path: {export}" in saved  # the LMM's tower is the pretraining export
    assert 0.0 <= summary["lmm_heldout"] <= 1.0
    rows = {r["benchmark"]: r for r in summary["lmms_eval"]}
    assert rows["llava_ov_motion_qa"]["samples"] == "4"
    # a second call finds every export and only evaluates again
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert again.returncode == 0 and "[pretrain]" not in again.stdout and "[align+sft]" not in again.stdout


def test_a_failed_stage_ends_the_pipeline_with_its_log(tmp_path):
    out = tmp_path / "stages"
    cmd = [sys.executable, str(ROOT / "scripts" / "run_stages.py"), "--out", str(out)]
    res = subprocess.run(
        [*cmd, "--pretrain", "pretrain.max_stepz=3"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert res.returncode != 0 and "stage pretrain failed" in res.stderr and "max_stepz" in res.stderr
    assert not (out / "lmm").exists()
