"""Exact resume (1 rank in process, 2 DataLoader workers) and a 2-rank ZeRO-2 run on CPU through the
``deepspeed`` launcher, resumed from its mid-run checkpoint as well."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file
from train_support import DEFAULT_YAML, launch, records, tiny_config, tiny_overrides

from llava_ov.data import build_loader
from llava_ov.train.trainer import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_qa_resume")


def _lrs(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k.startswith("lr/")}


def _copy_checkpoint(src_out, dst_out, stage: str, step: int) -> None:
    tag = f"step_{step:08d}"
    dst = dst_out / stage / "checkpoints" / tag
    shutil.copytree(src_out / stage / "checkpoints" / tag, dst)
    shutil.copytree(src_out / "tokenizer", dst_out / "tokenizer")


def _same_export(a, b) -> bool:
    fa, fb = load_file(str(a / "projector.safetensors")), load_file(str(b / "projector.safetensors"))
    llm_a = load_file(str(next((a / "llm").glob("*.safetensors"))))
    llm_b = load_file(str(next((b / "llm").glob("*.safetensors"))))
    return all(torch.equal(fa[k], fb[k]) for k in fa) and all(torch.equal(llm_a[k], llm_b[k]) for k in llm_a)


def test_data_stream_resumes_exactly(data_root, tmp_path):
    """Batches after a restored stream state are those of the uninterrupted stream (2 workers)."""
    from encoder.typed_config import merge_config
    from llava_ov.data import prepare_data, tokenizer_texts
    from llava_ov.text import build_tokenizer
    from llava_ov.train.build import stage_data_config

    cfg = tiny_config(tmp_path, data_root)
    data = merge_config(stage_data_config(cfg, "align"), {"num_workers": 2, "max_tokens": 600})
    prepare_data(data, progress=False)
    tok = build_tokenizer(tokenizer_texts(), 400)
    it = iter(build_loader(data, tok, rank=0, world_size=1))
    full = [next(it).keys for _ in range(7)]
    del it
    loader = build_loader(data, tok, rank=0, world_size=1)
    it = iter(loader)
    head = [next(it).keys for _ in range(3)]
    state = loader.state_dict()
    del it
    resumed = iter(build_loader(data, tok, rank=0, world_size=1, resume=state))
    assert head + [next(resumed).keys for _ in range(4)] == full


def test_exact_resume_one_rank(data_root, tmp_path):
    common = {
        "stages": "[align]",
        "align.trainable": "[vision, projector, llm]",
        "align.max_steps": 6,
        "align.evaluate": False,
        "checkpoint.every": 3,
        "data.num_workers": 2,
        "align.optim.warmup_steps": 2,
        "log.plot": False,
    }
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    train(tiny_config(full_dir, data_root, **common))
    full = records(full_dir, "align")
    assert [r["step"] for r in full] == [1, 2, 3, 4, 5, 6]
    _copy_checkpoint(full_dir, resumed_dir, "align", 3)
    train(tiny_config(resumed_dir, data_root, **common))
    resumed = records(resumed_dir, "align")
    assert [r["step"] for r in resumed] == [4, 5, 6]  # it really started from the checkpoint
    for a, b in zip(full[3:], resumed):
        assert a["loss"] == b["loss"], (a["step"], a["loss"], b["loss"])  # bitwise on CPU
        assert a["samples"] == b["samples"] and a["text_tokens"] == b["text_tokens"]
        assert _lrs(a) == _lrs(b)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-6)
    assert _same_export(full_dir / "align" / "final", resumed_dir / "align" / "final")


def test_two_rank_zero2_on_cpu_and_resume(data_root, tmp_path):
    from llava_ov.data import prepare_data
    from llava_ov.train.build import stage_data_config

    cfg = tiny_config(tmp_path / "warmup", data_root)
    prepare_data(stage_data_config(cfg, "align"), progress=False)  # generate once, before two ranks race
    extra = {"align.max_steps": 4, "sft.max_steps": 2, "checkpoint.every": 2, "deepspeed.zero_stage": 2}
    full_dir = tmp_path / "full"
    proc = launch(["--config", str(DEFAULT_YAML), *tiny_overrides(full_dir, data_root, **extra)], num_ranks=2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 rank(s)" in proc.stdout
    align = records(full_dir, "align")
    assert [r["step"] for r in align] == [1, 2, 3, 4]
    assert all(r["samples"] >= 2 for r in align)  # both ranks' samples are counted
    assert (full_dir / "sft" / "final" / "llava_ov.json").is_file() and (
        full_dir / "sft" / "eval.json"
    ).is_file()
    ckpt = full_dir / "align" / "checkpoints" / "step_00000002"
    assert (ckpt / "rank_00000.pt").is_file() and (ckpt / "rank_00001.pt").is_file()

    resumed_dir = tmp_path / "resumed"
    _copy_checkpoint(full_dir, resumed_dir, "align", 2)
    args = tiny_overrides(resumed_dir, data_root, **extra | {"stages": "[align]"})
    proc = launch(["--config", str(DEFAULT_YAML), *args], num_ranks=2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resumed = records(resumed_dir, "align")
    assert [r["step"] for r in resumed] == [3, 4]
    for a, b in zip(align[2:], resumed):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7) and _lrs(a) == _lrs(b)


def test_compiled_blocks_with_checkpointing_resume_exactly(data_root, tmp_path):
    """``model.compile`` (aot_eager: no code generation on CI) with activation checkpointing: the run trains,
    resumes bitwise and matches the eager run (packs of changing length:
    tests/llava_ov/model/test_llm_attention.py)."""
    common = {
        "stages": "[align]",
        "align.trainable": "[vision, projector, llm]",
        "align.max_steps": 4,
        "align.evaluate": False,
        "checkpoint.every": 2,
        "model.activation_checkpointing": True,
        "align.optim.warmup_steps": 1,
        "log.plot": False,
    }
    compiled = {**common, "model.compile": True, "model.compile_backend": "aot_eager"}
    full_dir, resumed_dir, eager_dir = tmp_path / "full", tmp_path / "resumed", tmp_path / "eager"
    train(tiny_config(full_dir, data_root, **compiled))
    train(tiny_config(eager_dir, data_root, **common))
    _copy_checkpoint(full_dir, resumed_dir, "align", 2)
    train(tiny_config(resumed_dir, data_root, **compiled))
    full, resumed, eager = (records(d, "align") for d in (full_dir, resumed_dir, eager_dir))
    assert [r["step"] for r in resumed] == [3, 4]
    assert [r["loss"] for r in full[2:]] == [r["loss"] for r in resumed]
    assert [r["loss"] for r in full] == pytest.approx([r["loss"] for r in eager], rel=1e-4)
    meta = (full_dir / "align" / "final" / "llava_ov.json").read_text()
    assert '"compile": false' in meta  # an export loads eagerly
