"""LMM checkpoints (save → load, local HF LLM folders, merged LoRA), generation, and scripts/chat.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lmm_model_support import batch_of, mixed_items, tiny_model
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

from encoder.codec import CodecConfig
from llava_ov.data.dataset import LMMItem, collate_items
from llava_ov.infer import LlavaOVProcessor
from llava_ov.model import LlavaOVModel, LLMConfig, ModelConfig, build_model, debug_config
from llava_ov.model.llm import build_llm
from llava_ov.text import ChatFormat, build_prompt, load_tokenizer

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer, seed=5).eval()


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory) -> Path:
    codec = CodecConfig(mode="frames", num_frames=2)
    codec.decode.input_size = 28
    out = model.save_pretrained(tmp_path_factory.mktemp("lmm") / "ckpt")
    LlavaOVProcessor(model.tokenizer, codec, tokens_for=model.token_counter()).save_pretrained(out)
    return out


def _logits(m: LlavaOVModel, batch) -> torch.Tensor:
    with torch.no_grad():
        return m(batch, return_logits=True).logits


def test_save_load_identical_logits(model, ckpt, tokenizer):
    meta = json.loads((ckpt / "llava_ov.json").read_text())
    assert meta["model"]["llm"] == {
        "path": "llm",
        "from_scratch": None,
        "attn_implementation": "auto",
        "tokenizer": None,
    }
    assert (
        meta["model"]["tower"]["path"] == "vision_tower"
        and meta["model"]["projector"]["path"] == "projector.safetensors"
    )
    assert "codec" not in meta and meta["version"] == 2
    processor = LlavaOVProcessor.from_pretrained(ckpt)
    assert processor.codec.mode == "frames" and processor.codec.decode.input_size == 28
    assert processor.chat == ChatFormat() and len(processor.tokenizer) == len(tokenizer)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in (ckpt / "llm").iterdir()
    }
    assert (
        "llava_ov" not in (ckpt / "llm" / "config.json").read_text()
    )  # the LLM folder loads without our code
    loaded = LlavaOVModel.from_pretrained(ckpt).eval()
    assert loaded.token_ids == model.token_ids
    batch = batch_of(mixed_items(tokenizer, model.token_counter()), tokenizer)
    torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), rtol=0, atol=0)
    # overrides apply on top of the saved config; a re-save of a loaded model stays relocatable
    again = LlavaOVModel.from_pretrained(
        ckpt, llm={"attn_implementation": "eager"}, activation_checkpointing=True
    )
    assert again.config.llm.attn_implementation == "eager" and again.config.activation_checkpointing
    torch.testing.assert_close(_logits(again.eval(), batch), _logits(model, batch), atol=1e-5, rtol=1e-5)


def test_llm_from_local_hf_folder_with_embedding_resize(tokenizer, tmp_path):
    """The real loading path (AutoModelForCausalLM.from_pretrained on a folder, as for Qwen/Qwen3-1.7B)."""
    small = build_llm(LLMConfig(from_scratch={}), vocab_size=len(tokenizer) - 6)
    small.save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    cfg = ModelConfig(llm=LLMConfig(path=str(tmp_path / "qwen")))
    m = build_model(cfg, load_tokenizer(tmp_path / "qwen"))
    emb = m.llm.get_input_embeddings().weight
    assert emb.shape[0] == len(tokenizer)  # grown to the tokenizer
    torch.testing.assert_close(emb[: len(tokenizer) - 6], small.get_input_embeddings().weight)
    ref = AutoModelForCausalLM.from_pretrained(tmp_path / "qwen")
    torch.testing.assert_close(
        m.llm.model.layers[0].mlp.up_proj.weight, ref.model.layers[0].mlp.up_proj.weight
    )
    batch = batch_of(mixed_items(tokenizer, m.token_counter()), tokenizer)
    assert torch.isfinite(m(batch).loss)


def test_lora_is_merged_on_save(tokenizer, tmp_path):
    peft = pytest.importorskip("peft")
    m = tiny_model(tokenizer, seed=6)
    m.llm = peft.get_peft_model(m.llm, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in m.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    batch = batch_of(mixed_items(tokenizer, m.token_counter()), tokenizer)
    out = m(batch, return_logits=True)
    out.loss.backward()  # the training path works through the peft wrapper
    m.save_pretrained(tmp_path / "ck")
    assert any("lora_" in n for n, _ in m.llm.named_parameters())  # the training model keeps its adapters
    from safetensors.torch import load_file

    assert not any("lora" in k for k in load_file(tmp_path / "ck" / "llm" / "model.safetensors"))
    loaded = LlavaOVModel.from_pretrained(tmp_path / "ck")
    torch.testing.assert_close(_logits(loaded, batch), out.logits.detach(), atol=1e-4, rtol=1e-4)
    with m.llm.disable_adapter():  # the adapters matter: without them the logits differ
        assert not torch.allclose(_logits(m, batch), out.logits.detach(), atol=1e-3)


class ForceTokens(LogitsProcessor):
    """Forces the generated sequence to be ``tokens`` (step k → tokens[k])."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens, self.start = tokens, None

    def __call__(self, input_ids, scores):
        self.start = input_ids.shape[1] if self.start is None else self.start
        step = min(input_ids.shape[1] - self.start, len(self.tokens) - 1)
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.tokens[step]] = 0.0
        return forced


def _prompt_batch(model, tokenizer, question: str, with_media: bool = True):
    items = mixed_items(tokenizer, model.token_counter())
    media, kinds = (items[0].media, items[0].kinds) if with_media else ([], [])
    prompt = build_prompt(
        [{"from": "human", "value": question}], tokenizer, [model.token_counter()(s) for s in media], kinds
    )
    return LMMItem("p", prompt, media, kinds)


def test_generate_greedy_and_stops_at_im_end(model, tokenizer):
    item = _prompt_batch(model, tokenizer, "What happens?")
    batch = collate_items([item], padded=True, pad_token_id=tokenizer.pad_token_id)
    ids = model.generate(batch, max_new_tokens=5)
    assert len(ids) == 1 and len(ids[0]) <= 5 and all(isinstance(t, int) for t in ids[0])
    first = int(_logits(model, batch)[0, -1].argmax())
    stop = (model.token_ids.im_end, model.token_ids.pad)
    assert ids[0][:1] == ([] if first in stop else [first])  # greedy = argmax of the forward logits
    word = tokenizer.convert_tokens_to_ids("a")
    forced = ForceTokens([word, word, model.token_ids.im_end, word])
    stopped = model.generate(batch, max_new_tokens=8, logits_processor=LogitsProcessorList([forced]))
    assert stopped == [[word, word]]  # cut before <|im_end|>, nothing after it
    # two prompts (one text-only) together == each alone: left padding inside generate is right
    other = _prompt_batch(model, tokenizer, "How many apples are there?", with_media=False)
    both = model.generate(collate_items([item, other], padded=True, pad_token_id=tokenizer.pad_token_id), 4)
    alone = model.generate(collate_items([other], padded=True, pad_token_id=tokenizer.pad_token_id), 4)
    assert both[1] == alone[0] and both[0] == model.generate(batch, 4)[0]
    packed = model.generate(collate_items([item, other]), 4)  # packed prompts are split per sample
    assert packed == both


def _load_chat():
    spec = importlib.util.spec_from_file_location("chat_cli", ROOT / "scripts" / "chat.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chat_cli(ckpt, tmp_path, capsys):
    from PIL import Image

    from encoder.codec.synthetic import make_clip

    video = make_clip(tmp_path / "clip.mp4", "mover", width=56, height=56, num_frames=8).path
    image = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 42, 3), dtype=np.uint8)).save(image)
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    cmd = [sys.executable, str(ROOT / "scripts" / "chat.py"), "--ckpt", str(ckpt), "--max-new-tokens", "3"]
    ok = subprocess.run(
        cmd + ["--video", video, "What happens?"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run(cmd + ["--video", str(bad), "What?"], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and failed.stdout == ""
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.mp4" in lines[0], failed.stderr
    chat = _load_chat()  # in-process for the cheaper cases
    assert (
        chat.main(["--ckpt", str(ckpt), "--image", str(image), "--max-new-tokens", "2", "What is this?"]) == 0
    )
    capsys.readouterr()
    assert (
        chat.main(["--ckpt", str(ckpt), "--video", video, "--mode", "collage", "--max-new-tokens", "2", "Q?"])
        == 0
    )
    warned = capsys.readouterr().err
    assert "trained with mode 'frames'; asking with --mode 'collage'" in warned  # a mode it never saw
    # --set takes one KEY=VALUE (repeatable): it no longer swallows the question
    assert (
        chat.main(
            ["--ckpt", str(ckpt), "--video", video, "--set", "num_frames=2", "--max-new-tokens", "2", "Q?"]
        )
        == 0
    )
    capsys.readouterr()
    assert chat.main(["--ckpt", str(tmp_path), "--image", str(image), "Q?"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "llava_ov.json" in err[0]
    missing = tmp_path / "runs" / "sft" / "final"  # a missing folder is named, never fetched from the hub
    assert chat.main(["--ckpt", str(missing), "Q?"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: no such checkpoint folder"]
    if not torch.cuda.is_available():  # a device the machine lacks: one line, exit 2, before any loading
        no_gpu = subprocess.run(
            cmd + ["--device", "cuda", "--image", str(image), "Q?"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [x for x in no_gpu.stderr.splitlines() if "[WARNING]" not in x]
        assert no_gpu.returncode == 2 and len(lines) == 1 and "has no CUDA GPU" in lines[0], no_gpu.stderr


def test_debug_config_is_a_plain_config():
    cfg = debug_config(merge=2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="merge"):
        ModelConfig.from_dict({"projector": {"merge": 3}})


def test_wrong_folders_say_what_they_are(tmp_path):
    """An encoder export given as an LMM, an LMM export given as an encoder, a stage folder: one line each."""
    from encoder.model import OVEncoder

    OVEncoder.from_name("debug").save_pretrained(tmp_path / "enc")
    with pytest.raises(ValueError, match="not an LMM checkpoint.*vision-tower export"):
        LlavaOVModel.from_pretrained(tmp_path / "enc")
    (tmp_path / "lmm" / "vision_tower").mkdir(parents=True)
    (tmp_path / "lmm" / "llava_ov.json").write_text("{}")
    with pytest.raises(ValueError, match="an LMM export: its vision tower is"):
        OVEncoder.from_pretrained(tmp_path / "lmm")
    (tmp_path / "stage" / "final").mkdir(parents=True)
    (tmp_path / "stage" / "final" / "llava_ov.json").write_text("{}")
    with pytest.raises(ValueError, match="a stage folder: its export is"):
        LlavaOVModel.from_pretrained(tmp_path / "stage")
