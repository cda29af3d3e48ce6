"""Fast trainer tests: schedule, parameter groups and freezing, DeepSpeed config, config errors, MFU
table, answer normalisation and accuracy summaries."""

from __future__ import annotations

import json
import math

import pytest
import torch
from train_support import DEFAULT_YAML

from encoder.typed_config import ConfigError
from llava_ov.train.config import LoraConfig, OptimConfig, StageConfig, load_train_config
from llava_ov.train.distributed import DistEnv, deepspeed_config
from llava_ov.train.evaluate import normalize_answer, summarize
from llava_ov.train.metrics import peak_flops
from llava_ov.train.optim import configure_trainable, module_of, param_groups, set_lr
from llava_ov.train.schedule import lr_factor, warmup_steps


@pytest.fixture(scope="module")
def tiny_model():
    from llava_ov.data import tokenizer_texts
    from llava_ov.model import build_model, debug_config
    from llava_ov.text import build_tokenizer

    torch.manual_seed(0)
    return build_model(debug_config(), build_tokenizer(tokenizer_texts(), 400))


# ----------------------------------------------------------------------------- schedule


def test_schedule_warmup_peak_end():
    total, warm = 100, 10
    assert lr_factor(0, total, warm) == pytest.approx(0.1)
    assert lr_factor(4, total, warm) == pytest.approx(0.5)
    assert lr_factor(9, total, warm) == pytest.approx(1.0)  # peak at the end of the warmup
    assert lr_factor(10, total, warm) == pytest.approx(1.0)
    mid = warm + (total - warm - 1) / 2
    assert lr_factor(int(mid), total, warm) == pytest.approx(
        0.5 + 0.5 * math.cos(math.pi * (int(mid) - warm) / 89)
    )
    assert lr_factor(total - 1, total, warm) == pytest.approx(0.0)  # min_ratio reached at the last step
    assert lr_factor(total - 1, total, warm, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(50, total, warm, "constant") == 1.0
    assert lr_factor(total - 1, total, warm, "linear", 0.2) == pytest.approx(0.2)
    values = [lr_factor(s, total, warm) for s in range(warm, total)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay


def test_warmup_steps_ratio_and_override():
    assert warmup_steps(OptimConfig(warmup_ratio=0.03), 1000) == 30
    assert warmup_steps(OptimConfig(warmup_steps=7), 1000) == 7
    assert warmup_steps(OptimConfig(warmup_ratio=0.0), 10) == 0
    assert lr_factor(0, 10, 0) == 1.0


# ----------------------------------------------------------------------------- groups / freezing


def test_param_groups_per_module_lr_and_no_decay(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model)
    configure_trainable(model, StageConfig(trainable=["vision", "projector", "llm"]))
    optim = OptimConfig(lr=1e-5, lr_vision=2e-6, weight_decay=0.1)
    groups = {g["name"]: g for g in param_groups(model, optim)}
    assert set(groups) == {f"{m}{s}" for m in ("vision", "projector", "llm") for s in ("", "/no_decay")}
    assert groups["vision"]["lr"] == 2e-6 and groups["vision/no_decay"]["lr"] == 2e-6
    assert groups["llm"]["lr"] == 1e-5 and groups["projector"]["lr"] == 1e-5
    names = {id(p): n for n, p in model.named_parameters()}
    for name, g in groups.items():
        for p in g["params"]:
            assert module_of(names[id(p)]) == name.split("/")[0]
            if name.endswith("no_decay"):
                assert g["weight_decay"] == 0.0 and (p.ndim < 2 or "norm" in names[id(p)])
            else:
                assert g["weight_decay"] == 0.1 and p.ndim >= 2
    opt = torch.optim.AdamW(list(groups.values()))
    lrs = set_lr(opt, 0.5)
    assert lrs["vision"] == pytest.approx(1e-6) and lrs["llm"] == pytest.approx(5e-6)


def test_align_freezes_all_but_projector(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model)
    configure_trainable(model, StageConfig(trainable=["projector"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projector.") for n in trainable)
    assert {g["name"] for g in param_groups(model, OptimConfig())} <= {"projector", "projector/no_decay"}


def test_lora_leaves_llm_frozen_but_adapters(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model)
    configure_trainable(
        model, StageConfig(trainable=["projector", "llm"], lora=LoraConfig(enabled=True, r=4))
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    llm = [n for n in trainable if n.startswith("llm.")]
    assert llm and all("lora_" in n for n in llm)
    assert any(n.startswith("projector.") for n in trainable)
    assert not any(n.startswith("vision_tower.") for n in trainable)


# ----------------------------------------------------------------------------- DeepSpeed config


def test_deepspeed_config_presets_file_and_auto(tmp_path):
    from llava_ov.train.config import DeepSpeedConfig

    env = DistEnv(0, 1, 0, torch.device("cpu"), "gloo", torch.float32)
    cfg = deepspeed_config(DeepSpeedConfig(zero_stage=3), env, grad_accum=4, grad_clip=1.0)
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["bf16"]["enabled"] is False  # fp32 on CPU
    file = tmp_path / "ds.json"
    file.write_text(
        json.dumps(
            {
                "gradient_accumulation_steps": "auto",
                "zero_optimization": {"stage": 2, "reduce_bucket_size": 1000},
                "bf16": {"enabled": "auto"},
            }
        )
    )
    cfg = deepspeed_config(
        DeepSpeedConfig(zero_stage=3, config_file=str(file), overrides={"gradient_clipping": 0.5}),
        env,
        grad_accum=4,
        grad_clip=1.0,
    )
    assert cfg["gradient_accumulation_steps"] == 4 and cfg["bf16"]["enabled"] is False
    assert cfg["zero_optimization"]["stage"] == 2 and cfg["zero_optimization"]["reduce_bucket_size"] == 1000
    assert cfg["gradient_clipping"] == 0.5
    bf16 = DistEnv(0, 1, 0, torch.device("cpu"), "gloo", torch.bfloat16)
    assert deepspeed_config(DeepSpeedConfig(), bf16, 1, 1.0)["bf16"]["enabled"] is True


def test_shipped_deepspeed_files_are_valid_json():
    from train_support import ROOT

    for name in ("zero2.json", "zero3.json"):
        data = json.loads((ROOT / "configs" / "deepspeed" / name).read_text())
        assert data["zero_optimization"]["stage"] == int(name[4])


# ----------------------------------------------------------------------------- configs


def test_wrong_config_key_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"unknown config key 'sft\.optim\.lrr' \(did you mean 'lr'\?\)"):
        load_train_config(DEFAULT_YAML, ["sft.optim.lrr=1e-4"])
    with pytest.raises(ConfigError, match="unknown stage"):
        load_train_config(DEFAULT_YAML, stage="pretrain")


def test_entry_point_reports_config_error(capsys, monkeypatch):
    import importlib.util

    from train_support import SCRIPT

    from encoder.cli import run_cli

    monkeypatch.delenv("RANK", raising=False)

    spec = importlib.util.spec_from_file_location("train_lmm_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert run_cli(lambda: module.main(["sft.max_stepz=3"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config key 'sft.max_stepz'" in err[0] and "max_steps" in err[0]


def test_overrides_merge_mappings_key_by_key():
    cfg = load_train_config(DEFAULT_YAML, ["data.max_tokens=2048", "model.llm.from_scratch.hidden_size=96"])
    assert cfg.data["max_tokens"] == 2048 and "num_workers" in cfg.data  # YAML keys kept
    assert (
        cfg.model.llm.from_scratch["hidden_size"] == 96
        and cfg.model.llm.from_scratch["num_hidden_layers"] == 2
    )


def test_full_recipes_load():
    from train_support import ROOT

    align = load_train_config(ROOT / "configs/train/ov_large_qwen3_1.7b_align.yaml")
    sft = load_train_config(ROOT / "configs/train/ov_large_qwen3_1.7b_sft.yaml")
    assert (
        align.stages == ["align"] and align.align.trainable == ["projector"] and align.align.optim.lr == 1e-3
    )
    assert align.align.optim.warmup_ratio == 0.03 and align.align.optim.schedule == "cosine"
    assert sft.stages == ["sft"] and sft.deepspeed.zero_stage == 3 and sft.sft.optim.lr == 1e-5
    assert sft.sft.optim.lr_vision == 2e-6 and sft.model.llm.attn_implementation == "auto"
    assert sft.model.activation_checkpointing and sft.deepspeed.precision == "bf16"
    assert align.model.tower.path == "lmms-lab-encoder/onevision-encoder-large"
    assert align.model.llm.path == "Qwen/Qwen3-1.7B"


# ----------------------------------------------------------------------------- metrics / eval


def test_peak_flops_and_mfu_arithmetic():
    assert peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989e12)
    assert peak_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert peak_flops("cpu") is None
    assert peak_flops("cpu", 1.5) == pytest.approx(1.5e12)


def test_flop_model_counts_matmuls_attention_and_backward_passes(tokenizer):
    from lmm_model_support import tiny_model

    from llava_ov.train.flops import Part, flop_model

    model = tiny_model(tokenizer)
    lm = model.llm
    c = lm.config
    per_layer = (
        c.hidden_size * c.num_attention_heads * c.head_dim * 2  # q, o
        + c.hidden_size * c.num_key_value_heads * c.head_dim * 2  # k, v
        + 3 * c.hidden_size * c.intermediate_size
    )  # gate, up, down
    fm = flop_model(model)
    assert fm.llm == Part(
        c.num_hidden_layers * per_layer,
        c.num_hidden_layers * c.num_attention_heads * c.head_dim,
        causal=True,
        passes=3,
    )
    assert fm.lm_head.matmul_params == len(tokenizer) * c.hidden_size
    vit = model.vision_tower.encoder.config
    assert fm.vision.attn_width == model.vision_tower.layer_index * vit.hidden_size
    unused = set(model.vision_tower.unused_parameter_names())
    assert fm.vision.matmul_params < sum(
        p.numel() for n, p in model.vision_tower.named_parameters() if n not in unused
    )
    # one step: 2 samples (3 and 5 tokens, 4 targets), 2 visual tokens, 6 patches in one media item
    got = fm.step_flops(text_tokens=8, targets=4, visual_tokens=2, patches=6, sample_sq=9 + 25, media_sq=36)
    want = (
        3 * (2 * fm.llm.matmul_params * 8 + 4 * 34 * fm.llm.attn_width * 0.5)
        + 3 * 2 * fm.lm_head.matmul_params * 4
        + 3 * 2 * fm.projector.matmul_params * 2
        + 3 * (2 * fm.vision.matmul_params * 6 + 4 * 36 * fm.vision.attn_width)
    )
    assert got == pytest.approx(want)
    # align: only the projector trains -> the LLM passes gradients (2x),
    # the frozen tower runs forward only (1x)
    model.requires_grad_(False)
    model.projector.requires_grad_(True)
    fm = flop_model(model)
    assert (fm.llm.passes, fm.lm_head.passes, fm.projector.passes, fm.vision.passes) == (2, 2, 3, 1)


def test_answer_normalisation_and_summary():
    assert normalize_answer(" Left.", one_word=True) == "left"
    assert normalize_answer("<think>\n\n</think>\n\nRed!", one_word=True) == "red"
    assert normalize_answer("two times", one_word=True) == "two"
    recs = [
        {"qtype": "direction", "answer": a, "prediction": p, "correct": a == p}
        for a, p in [("left", "left"), ("right", "left"), ("up", "up"), ("down", "down")]
    ]
    recs += [
        {"qtype": "count", "answer": a, "prediction": "one", "correct": a == "one"}
        for a in ("one", "two", "two")
    ]
    s = summarize(recs)
    assert s["per_type"]["direction"]["accuracy"] == 0.75 and s["per_type"]["direction"]["chance"] == 0.25
    assert s["per_type"]["count"]["chance"] == 0.5 and s["per_type"]["count"]["majority"] == pytest.approx(
        2 / 3
    )
    assert s["accuracy"] == pytest.approx(4 / 7) and s["n"] == 7
