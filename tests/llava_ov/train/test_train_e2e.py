"""End-to-end trainer runs on 1 rank (in process): align → sft with exports, metrics, eval and the
loss-curve PNG; align-stage freezing; LoRA; a corrupt clip in the training shards; ZeRO-3 smoke."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from train_support import records, tiny_config

from llava_ov.model import LlavaOVModel
from llava_ov.train.config import load_train_config
from llava_ov.train.trainer import train

pytestmark = pytest.mark.slow

FIELDS = {
    "stage",
    "step",
    "global_step",
    "loss",
    "grad_norm",
    "tokens_per_s",
    "visual_tokens_per_s",
    "mfu",
    "data_wait_s",
    "peak_mem_gb",
    "step_time_s",
    "skipped",
    "samples",
}


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_qa")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("run")
    results = train(tiny_config(out, data_root))
    return out, results


def _weights(export) -> dict[str, torch.Tensor]:
    return LlavaOVModel.from_pretrained(export).state_dict()


def test_align_then_sft_run(tiny_run):
    out, results = tiny_run
    assert list(results) == ["align", "sft"]
    for stage in ("align", "sft"):
        assert (out / stage / "final" / "llava_ov.json").is_file()
        recs = records(out, stage)
        assert [r["step"] for r in recs] == list(range(1, len(recs) + 1)) and len(recs) == results[
            stage
        ].steps
        assert FIELDS <= set(recs[0])
        assert any(k.startswith("lr/") for k in recs[0])
    assert {k for k in records(out, "align")[0] if k.startswith("lr/")} == {
        "lr/projector",
        "lr/projector/no_decay",
    }
    sft = records(out, "sft")
    assert {"lr/vision", "lr/projector", "lr/llm"} <= set(sft[0])
    assert sft[0]["global_step"] == records(out, "align")[-1]["global_step"] + 1
    assert (out / "loss_curve.png").stat().st_size > 1000
    summary = json.loads((out / "sft" / "eval.json").read_text())
    assert summary["n"] == 20 and set(summary["per_type"]) == {
        "direction",
        "which_moved",
        "appeared",
        "count",
        "color",
    }
    assert all(0.0 < t["chance"] < 1.0 for t in summary["per_type"].values())
    assert results["sft"].eval["accuracy"] == summary["accuracy"]


def test_the_resolved_config_is_saved_with_the_run(tiny_run, data_root):
    out, _ = tiny_run
    cfg = tiny_config(out, data_root)
    cfg.validate()
    assert load_train_config(out / "config.yaml") == cfg  # loads back to the config that ran


def test_stage_export_loads_and_generates(tiny_run, data_root):
    from encoder.codec import PatchSelection
    from llava_ov.data import ReadConfig, collate_items, eval_items, iter_raw_samples
    from llava_ov.data.mixture import resolve_shards
    from llava_ov.infer import LlavaOVProcessor
    from llava_ov.train.build import stage_data_config

    out, _ = tiny_run
    model = LlavaOVModel.from_pretrained(out / "sft" / "final")
    processor = LlavaOVProcessor.from_pretrained(out / "sft" / "final")
    assert processor.codec.select.budget == 128 and processor.codec.select.min_score == 4.0
    cfg = tiny_config(out, data_root)
    data = stage_data_config(cfg, "sft")
    items = [it for _, it in zip(range(3), eval_items(data, model.tokenizer, model.token_counter(), 0, 1))]
    outputs = model.generate(collate_items(items), max_new_tokens=2)
    assert len(outputs) == 3 and all(len(o) <= 2 for o in outputs)
    # the exported processor asks the held-out questions exactly as the trainer's evaluator does
    source = data.eval_sources[0]
    raw = next(
        iter_raw_samples(resolve_shards(data, source), ReadConfig(0, 0, False, 0, 1, shuffle_shards=False))
    )
    question = json.loads(raw["json"])["conversations"][0][
        "value"
    ]  # "<video>\nWhich ...? Answer with one word."
    assert question.startswith("<video>\n")
    for text in (question, question.removeprefix("<video>\n")):  # placeholder given, or put in front
        again = processor.prompt(text, [PatchSelection.from_bytes(raw["npz"])])
        assert torch.equal(again.tokens.input_ids, items[0].tokens.input_ids)


def test_align_changes_only_the_projector(tiny_run, tmp_path, data_root):
    out, _ = tiny_run
    from llava_ov.model import build_model
    from llava_ov.text import load_tokenizer

    cfg = tiny_config(tmp_path, data_root)
    torch.manual_seed(cfg.seed)
    fresh = build_model(cfg.model, load_tokenizer(out / "tokenizer")).state_dict()
    aligned = _weights(out / "align" / "final")
    changed = {k for k, v in aligned.items() if not torch.equal(v, fresh[k])}
    assert changed and all(k.startswith("projector.") for k in changed)
    tuned = _weights(out / "sft" / "final")
    moved = {k.split(".")[0] for k, v in tuned.items() if not torch.equal(v, aligned[k])}
    assert moved == {"projector", "llm", "vision_tower"}


def test_lora_sft_merges_on_export(tiny_run, tmp_path, data_root):
    out, _ = tiny_run
    cfg = tiny_config(
        tmp_path,
        data_root,
        stage="sft",
        **{
            "sft.init_from": out / "align" / "final",
            "sft.lora.enabled": True,
            "sft.lora.r": 4,
            "sft.trainable": "[projector, llm]",
            "sft.evaluate": False,
            "sft.optim.lr": 1e-2,
        },
    )
    train(cfg)
    export = tmp_path / "sft" / "final"
    names = _weights(export)
    assert not any("lora" in k for k in names)  # merged
    before, after = _weights(out / "align" / "final"), names
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any(k.startswith("llm.") and "proj" in k for k in changed)  # adapters merged into the weights
    assert not any(k.startswith("vision_tower.") for k in changed)  # not trainable in this stage
    assert LlavaOVModel.from_pretrained(export) is not None
    lrs = {k for k in records(tmp_path, "sft")[0] if k.startswith("lr/")}
    assert lrs == {"lr/llm", "lr/projector", "lr/projector/no_decay"}  # LoRA A/B matrices decay


def test_corrupt_clip_is_skipped_and_counted(tiny_run, tmp_path, data_root):
    from llava_ov.data import ShardWriter, iter_raw_samples

    out, _ = tiny_run
    train_shards = sorted((data_root / "train").rglob("*.tar"))  # train/<config hash>/shard-*.tar
    shard_dir = tmp_path / "shards"
    with ShardWriter(shard_dir, "shard", 100) as writer:
        for i, raw in enumerate(iter_raw_samples([str(p) for p in train_shards])):
            if i == 8:
                break
            mp4 = raw["mp4"] if i != 0 else raw["mp4"][:200] + b"\x00garbage" * 64  # truncated, corrupt clip
            writer.write(raw["__key__"], raw["json"], [("mp4", mp4)])
    cfg = tiny_config(
        tmp_path / "run",
        data_root,
        stage="align",
        **{
            "data.sources": f"[{{name: with_corrupt, shards: {shard_dir}, media_kind: video}}]",
            "data.shuffle_buffer": 0,
            "align.max_steps": 3,
            "align.evaluate": False,
        },
    )
    results = train(cfg)
    assert results["align"].steps == 3 and results["align"].data["skipped"]["corrupt_media"] >= 1
    last = records(tmp_path / "run", "align")[-1]
    assert last["skipped/corrupt_media"] >= 1 and last["skipped"] >= 1


def test_zero3_one_rank_smoke(tiny_run, tmp_path, data_root):
    out, _ = tiny_run
    cfg = tiny_config(
        tmp_path,
        data_root,
        stage="sft",
        **{
            "sft.init_from": out / "align" / "final",
            "sft.max_steps": 2,
            "sft.evaluate": False,
            "deepspeed.zero_stage": 3,
        },
    )
    results = train(cfg)
    assert results["sft"].steps == 2
    assert all(r["loss"] > 0 for r in records(tmp_path, "sft"))
    model = LlavaOVModel.from_pretrained(tmp_path / "sft" / "final")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_finished_stages_are_skipped_on_rerun(tiny_run, tmp_path, data_root):
    out, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    results = train(tiny_config(copy, data_root))
    assert all(r.skipped for r in results.values())
