"""Inference: the processor (media, prompts, save / load, codec overrides), the patch cache and the Engine
(log-likelihoods against a hand computation, batching invariance, stop strings, sampling, bad media).

The LLM is a tiny random Qwen3 with a large init range (``initializer_range=0.3``) so that greedy decoding
produces varied, media-dependent text instead of one repeated token."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from encoder.codec import CodecConfig, PatchCache, PatchSelection, VideoDecodeError, patchify, virtual_t
from encoder.codec.synthetic import make_clip, render_scene
from llava_ov.data.dataset import collate_items, collate_media
from llava_ov.infer import (
    PROCESSOR_FILE,
    Engine,
    GenerationConfig,
    LlavaOVProcessor,
    codec_overrides,
    cut_at_strings,
)
from llava_ov.model import build_model, debug_config
from llava_ov.model.merge import TokenCounter
from llava_ov.text import ChatFormat

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPTS = ["What happens?", "What is this?", "Describe the video.", "How many apples?", "Hi", "Is it red?"]


def lively_model(tokenizer, merge: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(debug_config(merge=merge, initializer_range=0.3), tokenizer).eval()


def small_codec() -> CodecConfig:
    codec = CodecConfig(mode="frames", num_frames=2)
    codec.decode.input_size = 28
    return codec


@pytest.fixture(scope="module")
def model(tokenizer):
    return lively_model(tokenizer, seed=3)


@pytest.fixture(scope="module")
def processor(model):
    return LlavaOVProcessor(model.tokenizer, small_codec(), tokens_for=model.tokens_counter())


@pytest.fixture
def engine(model, processor):
    return Engine(model, processor, batch_size=1)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("infer_media")
    video = make_clip(d / "clip.mp4", "mover", width=56, height=56, num_frames=8).path
    rgb = np.random.default_rng(0).integers(0, 255, (30, 45, 3), dtype=np.uint8)  # not multiples of 14
    Image.fromarray(rgb).save(d / "still.png")
    pil = Image.fromarray(np.random.default_rng(1).integers(0, 255, (28, 42, 3), dtype=np.uint8))
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video" * 4)
    return {
        "video": video,
        "image": str(d / "still.png"),
        "pil": pil,
        "dir": d,
        "missing": str(d / "missing_clip.mp4"),
        "corrupt": str(d / "corrupt.mp4"),
    }


@pytest.fixture(scope="module")
def mixed(media) -> list[tuple[str, list]]:
    """5 requests: video path, image path, PIL image, text only, video + PIL image."""
    return [
        ("What happens?", [media["video"]]),
        ("What is this?", [media["image"]]),
        ("Describe.", [media["pil"]]),
        ("How many apples?", []),
        ("Hi", [media["video"], media["pil"]]),
    ]


# ----------------------------------------------------------------------------- helpers


def sequence_logp(model, processor, text, media, extra: list[int]) -> tuple[torch.Tensor, int]:
    """Log-softmax (float64) at every position of the prompt followed by ``extra`` tokens, from one
    unpadded forward (text only: the LLM on input_ids; with media: the visual tokens placed by
    ``model.embed``), and the prompt length."""
    item = processor.prompt(text, media)
    ids = torch.cat([item.tokens.input_ids, torch.tensor(extra, dtype=torch.long)])[None]
    with torch.no_grad():
        if item.media:
            logits = model.llm(inputs_embeds=model.embed(ids, collate_media([item]))).logits
        else:
            logits = model.llm(input_ids=ids).logits
    return F.log_softmax(logits[0].double(), dim=-1), len(item.tokens.input_ids)


def manual_logprobs(model, processor, text, media, cont_ids: list[int]) -> torch.Tensor:
    """Per-token log-probabilities of ``cont_ids`` after the prompt."""
    logp, n = sequence_logp(model, processor, text, media, cont_ids)
    positions = torch.arange(n - 1, n - 1 + len(cont_ids))
    return logp[positions, torch.tensor(cont_ids)]


def next_token_logp(model, processor, text, media, prefix: list[int]) -> torch.Tensor:
    return sequence_logp(model, processor, text, media, prefix)[0][-1]


def round_trips(tokenizer, ids: list[int]) -> bool:
    """``ids`` decode to a stripped, non-empty text that encodes back to exactly ``ids``."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return bool(text) and text == text.strip() and tokenizer.encode(text, add_special_tokens=False) == ids


def greedy_ids(model, processor, text, media, n: int) -> list[int]:
    item = processor.prompt(text, media)
    return model.generate(
        collate_items([item], padded=True, pad_token_id=model.token_ids.pad), max_new_tokens=n
    )[0]


def greedy_case(model, processor, media_sets):
    """(text, media, ids): a prompt whose greedy continuation (>= 2 tokens) round-trips through the text."""
    tok = processor.tokenizer
    for med in media_sets:
        for text in PROMPTS:
            ids = greedy_ids(model, processor, text, med, 6)
            for k in range(len(ids), 1, -1):
                if round_trips(tok, ids[:k]):
                    return text, med, ids[:k]
    raise AssertionError("no prompt with a round-tripping greedy continuation")


# ----------------------------------------------------------------------------- Engine: scoring


def test_loglikelihood_matches_manual_and_is_greedy(model, processor, media):
    tok = processor.tokenizer
    for med in ([media["video"]], []):  # with media (embed path) and text only (plain LLM path)
        text, med, ids = greedy_case(model, processor, [med])
        k = len(ids)
        engine = Engine(model, processor, batch_size=1)
        greedy_text = engine.generate([(text, med)], GenerationConfig(max_new_tokens=k))[0]
        assert greedy_text == tok.decode(ids) and tok.encode(greedy_text, add_special_tokens=False) == ids
        # the same prefix, its last token replaced by the most likely other token that round-trips
        logp_last = next_token_logp(model, processor, text, med, ids[:-1])
        assert int(logp_last.argmax()) == ids[-1]
        alt = next(
            ids[:-1] + [t]
            for t in logp_last.argsort(descending=True).tolist()
            if t != ids[-1] and round_trips(tok, ids[:-1] + [t])
        )
        other_text = tok.decode(alt)
        # batch of 3 (padding involved), the greedy one in the middle
        engine.batch_size = 3
        res = engine.loglikelihood(
            [(text, other_text, med), (text, greedy_text, med), ("Is it red?", "yes", [])]
        )
        assert [r.num_tokens for r in res] == [k, k, len(tok.encode("yes", add_special_tokens=False))]
        ref_alt = manual_logprobs(model, processor, text, med, alt)
        ref_greedy = manual_logprobs(model, processor, text, med, ids)
        ref_yes = manual_logprobs(
            model, processor, "Is it red?", [], tok.encode("yes", add_special_tokens=False)
        )
        assert res[0].logprob == pytest.approx(float(ref_alt.sum()), abs=1e-5)
        assert res[1].logprob == pytest.approx(float(ref_greedy.sum()), abs=1e-5)
        assert res[2].logprob == pytest.approx(float(ref_yes.sum()), abs=1e-5)
        assert res[1].is_greedy and not res[0].is_greedy
        assert res[1].logprob > res[0].logprob
        # shared prefix: the two continuations differ by their last token's log-probability only
        assert res[1].logprob - res[0].logprob == pytest.approx(
            float(logp_last[ids[-1]] - logp_last[alt[-1]]), abs=1e-5
        )


def test_scored_rejects_empty_continuation(processor):
    with pytest.raises(ValueError, match="no tokens"):
        processor.scored("Q?", "")


# ----------------------------------------------------------------------------- Engine: batching


def test_batching_invariance(model, processor, mixed):
    gen = GenerationConfig(max_new_tokens=10)
    one = Engine(model, processor, batch_size=1)
    three = Engine(model, processor, batch_size=3)
    a1, a3 = one.generate(mixed, gen), three.generate(mixed, gen)
    assert a1 == a3
    assert all(a1) and len(set(a1)) == len(a1), a1  # a real comparison: varied, non-empty answers
    conts = ["A red cat", "3 apples", "The dog runs", "There are", "quick brown fox"]
    scored = [(text, cont, med) for (text, med), cont in zip(mixed, conts)]
    l1, l3 = one.loglikelihood(scored), three.loglikelihood(scored)
    for r1, r3 in zip(l1, l3):
        assert r1.num_tokens == r3.num_tokens and r1.is_greedy == r3.is_greedy
        assert r1.logprob == pytest.approx(r3.logprob, abs=1e-5)
    assert len({round(r.logprob, 3) for r in l1}) == len(l1)
    # generate_items (ready prompt items) agrees with generate
    items = [processor.prompt(text, med) for text, med in mixed]
    assert three.generate_items(items, gen) == a1


def test_engine_rejects_bad_settings(model, processor):
    with pytest.raises(ValueError, match="batch_size"):
        Engine(model, processor, batch_size=0)
    with pytest.raises(ValueError, match="on_error"):
        Engine(model, processor).generate([("Q?", [])], GenerationConfig(max_new_tokens=1), on_error="ignore")


# ----------------------------------------------------------------------------- Engine: until, sampling


def test_until_cuts_before_stop_string(engine, media):
    full = engine.generate([("What happens?", [media["video"]])], GenerationConfig(max_new_tokens=32))[0]
    # stop strings: ASCII-letter runs found after the start of the answer
    words = []
    for i in range(1, len(full) - 1):
        piece = full[i : i + 2]
        if piece.isascii() and piece.isalpha() and full.find(piece) == i and full[:i].strip():
            words.append((i, piece))
    assert len(words) >= 2, full
    (i1, s1), (i2, s2) = words[0], words[-1]
    cut = engine.generate(
        [("What happens?", [media["video"]])], GenerationConfig(max_new_tokens=32, until=[s2])
    )[0]
    assert cut == full[:i2].strip() and s2 not in cut and len(cut) < len(full)
    both = engine.generate(
        [("What happens?", [media["video"]])], GenerationConfig(max_new_tokens=32, until=[s2, s1])
    )[0]
    assert both == full[:i1].strip()  # the earliest stop string wins, whatever the list order
    never = engine.generate(
        [("What happens?", [media["video"]])], GenerationConfig(max_new_tokens=32, until=["\x07never\x07"])
    )[0]
    assert never == full


def test_sampling_is_reproducible_with_a_seed(engine, mixed):
    greedy = engine.generate(mixed, GenerationConfig(max_new_tokens=8))
    hot = GenerationConfig(max_new_tokens=8, temperature=1.0)
    torch.manual_seed(1234)
    first = engine.generate(mixed, hot)
    torch.manual_seed(1234)
    second = engine.generate(mixed, hot)
    assert first == second
    assert first != greedy  # sampling took effect on at least one of the five prompts
    assert engine.generate(mixed, GenerationConfig(max_new_tokens=8)) == greedy  # greedy is stateless


# ----------------------------------------------------------------------------- Engine: bad media


def test_on_error_skip_and_raise(model, processor, media):
    good = [
        ("What happens?", [media["video"]]),
        ("What is this?", [media["image"]]),
        ("How many apples?", []),
    ]
    bad_missing = ("Missing?", [media["missing"]])
    bad_corrupt = ("Corrupt?", [media["corrupt"]])
    requests = [good[0], bad_missing, good[1], bad_corrupt, good[2]]
    gen = GenerationConfig(max_new_tokens=6)
    engine = Engine(model, processor, batch_size=2)
    answers = engine.generate(requests, gen, on_error="skip")
    reference = Engine(model, processor, batch_size=2).generate(good, gen)
    assert answers[1] == "" and answers[3] == ""
    assert [answers[0], answers[2], answers[4]] == reference and all(reference)
    assert [i for i, _ in engine.failures] == [1, 3]
    assert "missing_clip.mp4" in engine.failures[0][1] and "corrupt.mp4" in engine.failures[1][1]
    scored = [(t, "A red cat", m) for t, m in requests]
    engine.failures.clear()
    ll = engine.loglikelihood(scored, on_error="skip")
    assert ll[1] is None and ll[3] is None and [i for i, _ in engine.failures] == [1, 3]
    ref_ll = Engine(model, processor).loglikelihood([(t, "A red cat", m) for t, m in good])
    for r, ref in zip([ll[0], ll[2], ll[4]], ref_ll):
        assert r.logprob == pytest.approx(ref.logprob, abs=1e-5)
    with pytest.raises(VideoDecodeError, match="missing_clip.mp4"):
        Engine(model, processor).generate(requests, gen, on_error="raise")
    with pytest.raises(VideoDecodeError, match="corrupt.mp4"):
        Engine(model, processor).loglikelihood([scored[3]])  # raise is the default


# ----------------------------------------------------------------------------- processor: media


def test_pil_image_equals_png_path(processor, media):
    sel_path, kind_path = processor.load_media(media["image"])
    pil = Image.open(media["image"]).convert("RGB")
    sel_pil, kind_pil = processor.load_media(pil)
    assert kind_path == kind_pil == "image"
    assert sel_pil.meta["mode"] == "image" and sel_pil.grid_hw == sel_path.grid_hw == (2, 3)  # 30x45 → 28x42
    np.testing.assert_array_equal(sel_pil.positions, sel_path.positions)
    np.testing.assert_array_equal(sel_pil.pixels, sel_path.pixels)
    assert len(sel_pil) == 6 and set(sel_pil.positions[:, 0].tolist()) == {0}


def test_frame_list_is_a_real_codec_encode(tokenizer):
    frames, boxes, _, _ = render_scene("mover", 56, 56, 8, seed=1)
    codec = CodecConfig()
    codec.decode.input_size, codec.decode.num_frames, codec.select.budget = 56, 8, 40
    proc = LlavaOVProcessor(tokenizer, codec)
    sel, kind = proc.load_media([Image.fromarray(f) for f in frames])
    assert kind == "video" and sel.meta["mode"] == "codec" and not sel.meta["static_fallback"]
    assert sel.meta["context_patches"] == 16  # frame 0 kept dense (4 x 4 grid)
    assert "bitstream" in sel.meta["motion_source"]  # motion vectors read from the H.264 written on the fly
    t_values = np.unique(sel.positions[:, 0])
    assert len(t_values) > 1 and t_values.max() - t_values.min() > 64 // 8
    np.testing.assert_array_equal(sel.frame_t, virtual_t(8))
    frame_of_t = {int(t): int(f) for t, f in zip(sel.frame_t, sel.frame_ids)}
    for (t, h, w), px in zip(sel.positions, sel.pixels):
        f = frame_of_t[int(t)]
        ref = frames[f, h * 14 : (h + 1) * 14, w * 14 : (w + 1) * 14].transpose(2, 0, 1).astype(int)
        assert np.abs(ref - px.astype(int)).mean() < 25  # the patch is that frame's content (lossy codec)
        if t > 0:  # non-context patches lie on the moving square (where it is or was a frame ago, give or
            # take one 8-px motion block)
            x0, y0 = boxes[f - 1 : f + 1, :2].min(0) - 8
            x1, y1 = boxes[f - 1 : f + 1, 2:].max(0) + 8
            assert w * 14 < x1 and (w + 1) * 14 > x0 and h * 14 < y1 and (h + 1) * 14 > y0, (t, h, w)


def test_load_media_errors_and_passthrough(processor):
    with pytest.raises(VideoDecodeError, match="empty frame list"):
        processor.load_media([])
    with pytest.raises(TypeError, match="unsupported media item int"):
        processor.load_media(3)
    with pytest.raises(TypeError, match="unsupported media item"):
        processor.load_media([Image.new("RGB", (28, 28)), "not a frame"])
    sel = PatchSelection(
        np.zeros((1, 3), np.int32),
        np.zeros((1, 3, 14, 14), np.uint8),
        np.ones(1),
        np.zeros(1, np.int64),
        np.zeros(1, np.int32),
        14,
        (1, 1),
        {"mode": "image"},
    )
    assert processor.load_media(sel) == (sel, "image")


# ----------------------------------------------------------------------------- processor: save / load


def _export(tokenizer, folder: Path, merge: int, processor_kwargs: dict) -> tuple[Path, LlavaOVProcessor]:
    model = lively_model(tokenizer, merge=merge, seed=1)
    out = model.save_pretrained(folder)
    proc = LlavaOVProcessor(model.tokenizer, tokens_for=model.tokens_counter(), **processor_kwargs)
    proc.save_pretrained(out)
    return out, proc


def test_processor_round_trip(tokenizer, tmp_path):
    codec = CodecConfig(mode="codec")
    codec.select.budget, codec.decode.input_size, codec.decode.num_frames = 96, 56, 16
    chat = ChatFormat(system_prompt="Answer briefly.", empty_think=True)
    out, proc = _export(tokenizer, tmp_path / "ck", merge=2, processor_kwargs={"codec": codec, "chat": chat})
    saved = json.loads((out / PROCESSOR_FILE).read_text())
    assert saved["format"] == "llava_ov_processor" and saved["version"] == 1
    loaded = LlavaOVProcessor.from_pretrained(out)
    assert loaded.codec == codec and loaded.chat == chat
    assert isinstance(loaded.tokens_for, TokenCounter) and loaded.tokens_for.merge == 2
    from test_model_support import dense_sel

    sel = dense_sel(2, 4, 4)
    assert loaded.tokens_for(sel) == TokenCounter(2)(sel) == 8 != len(sel)
    a, b = proc.prompt("Which way?", [sel]), loaded.prompt("Which way?", [sel])
    assert torch.equal(a.tokens.input_ids, b.tokens.input_ids)
    text = tokenizer.decode(b.tokens.input_ids)
    assert "Answer briefly." in text and "<think>" in text
    plain = LlavaOVProcessor(tokenizer, tokens_for=TokenCounter(2)).prompt("Which way?", [sel])
    assert len(plain.tokens.input_ids) < len(b.tokens.input_ids)  # the chat format is what was saved


def test_processor_version1_export_and_future_version(tokenizer, tmp_path):
    codec = small_codec()
    codec.select.budget = 77
    out, _ = _export(tokenizer, tmp_path / "v1", merge=1, processor_kwargs={"codec": codec})
    (out / PROCESSOR_FILE).unlink()
    meta = json.loads((out / "llava_ov.json").read_text())
    import dataclasses

    meta["version"], meta["codec"] = 1, dataclasses.asdict(codec)
    (out / "llava_ov.json").write_text(json.dumps(meta))
    old = LlavaOVProcessor.from_pretrained(out)
    assert old.codec == codec and old.chat == ChatFormat() and old.tokens_for.merge == 1
    # a processor.json from a newer version of the code
    future = tmp_path / "future"
    shutil.copytree(out, future)
    (future / PROCESSOR_FILE).write_text(
        json.dumps({"format": "llava_ov_processor", "version": 99, "codec": {}, "chat": {}})
    )
    with pytest.raises(ValueError, match=rf"{future / PROCESSOR_FILE}.*version 99"):
        LlavaOVProcessor.from_pretrained(future)
    (future / PROCESSOR_FILE).write_text(json.dumps({"format": "something_else", "version": 1}))
    with pytest.raises(ValueError, match="something_else"):
        LlavaOVProcessor.from_pretrained(future)


# ----------------------------------------------------------------------------- codec overrides


def test_codec_overrides():
    base = CodecConfig()
    cfg = codec_overrides(base, budget=512, num_frames=16, input_size=112, image_max_side=336, mode=None)
    assert cfg.mode == "codec" and cfg.select.budget == 512 and cfg.decode.input_size == 112
    assert cfg.decode.num_frames == 16 and cfg.num_frames == base.num_frames and cfg.image_max_side == 336
    frames = codec_overrides(base, mode="frames", num_frames=4)  # resolved against the new mode
    assert (
        frames.mode == "frames"
        and frames.num_frames == 4
        and frames.decode.num_frames == base.decode.num_frames
    )
    assert codec_overrides(small_codec(), num_frames="3").num_frames == 3
    assert base == CodecConfig()  # the input is not modified
    assert codec_overrides(base) == base
    with pytest.raises(ValueError, match=r"unknown codec setting\(s\) \['frames'\]"):
        codec_overrides(base, frames=8)
    with pytest.raises(ValueError, match="mode"):
        codec_overrides(base, mode="gif")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        codec_overrides(base, input_size=100)


# ----------------------------------------------------------------------------- patch cache


def test_patch_cache(media, tmp_path):
    cfg = small_codec()
    cache = PatchCache(tmp_path / "cache")
    direct = patchify(media["video"], cfg)
    first = cache.patchify(media["video"], cfg)
    assert (cache.hits, cache.misses) == (0, 1)
    entry = cache.entry(media["video"], cfg)
    assert entry.is_file() and entry.parent.parent == tmp_path / "cache"
    second = cache.patchify(media["video"], cfg)
    assert (cache.hits, cache.misses) == (1, 1)
    for sel in (first, second):
        for name in ("positions", "pixels", "scores", "frame_ids", "frame_t"):
            np.testing.assert_array_equal(getattr(sel, name), getattr(direct, name))
        assert sel.grid_hw == direct.grid_hw and sel.patch_size == direct.patch_size
    # the same bytes under another name hit; another setting misses
    copy = tmp_path / "renamed.mp4"
    shutil.copyfile(media["video"], copy)
    np.testing.assert_array_equal(cache.patchify(copy, cfg).pixels, direct.pixels)
    assert (cache.hits, cache.misses) == (2, 1) and cache.entry(copy, cfg) == entry
    cfg3 = small_codec()
    cfg3.num_frames = 3
    three = cache.patchify(media["video"], cfg3)
    assert (
        (cache.hits, cache.misses) == (2, 2)
        and three.num_frames == 3
        and cache.entry(media["video"], cfg3) != entry
    )
    np.testing.assert_array_equal(three.pixels, patchify(media["video"], cfg3).pixels)
    # an image file through the cache equals patchify directly
    img = cache.patchify(media["image"], cfg)
    np.testing.assert_array_equal(img.pixels, patchify(media["image"], cfg).pixels)
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    # a corrupt entry is recomputed and rewritten
    entry.write_bytes(b"garbage, not an npz")
    again = cache.patchify(media["video"], cfg)
    assert cache.misses == 4
    np.testing.assert_array_equal(again.pixels, direct.pixels)
    np.testing.assert_array_equal(PatchSelection.load(entry).pixels, direct.pixels)
    # a missing file names itself
    with pytest.raises(VideoDecodeError, match="missing_clip.mp4"):
        cache.patchify(media["missing"], cfg)


def test_patch_cache_recomputes_truncated_entry(media, tmp_path):
    cfg = small_codec()
    cache = PatchCache(tmp_path / "cache")
    direct = cache.patchify(media["video"], cfg)
    entry = cache.entry(media["video"], cfg)
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # truncated zip
    np.testing.assert_array_equal(cache.patchify(media["video"], cfg).pixels, direct.pixels)
    entry.write_bytes(b"")  # empty file
    np.testing.assert_array_equal(cache.patchify(media["video"], cfg).pixels, direct.pixels)
    assert (cache.hits, cache.misses) == (0, 3)
    # a hit through another name reports the file asked for
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes(Path(media["video"]).read_bytes())
    assert cache.patchify(copy, cfg).meta["path"] == str(copy) and cache.hits == 1


def test_processor_uses_cache_for_files(model, media, tmp_path):
    cache = PatchCache(tmp_path / "c")
    proc = LlavaOVProcessor(model.tokenizer, small_codec(), tokens_for=model.tokens_counter(), cache=cache)
    proc.prompt("Q?", [media["video"], media["image"], media["pil"]])
    proc.prompt("Q?", [media["video"], media["image"]])
    assert (cache.hits, cache.misses) == (2, 2)  # files only; in-memory images are not cached


# ----------------------------------------------------------------------------- small pieces


def test_generation_config_from_kwargs():
    assert GenerationConfig.from_kwargs({}) == GenerationConfig(128, 0.0, 1.0, [])
    assert GenerationConfig.from_kwargs({}, default_max_new_tokens=7).max_new_tokens == 7
    sampled = GenerationConfig.from_kwargs({"do_sample": True})
    assert sampled.temperature == 1.0
    assert GenerationConfig.from_kwargs({"do_sample": True, "temperature": 0.3}).temperature == 0.3
    assert GenerationConfig.from_kwargs({"temperature": 0, "do_sample": False}).temperature == 0.0
    # lmms-eval's convention (mmvet sets temperature 0.2 with do_sample false): greedy
    assert GenerationConfig.from_kwargs({"temperature": 0.7, "do_sample": False}).temperature == 0.0
    assert GenerationConfig.from_kwargs(
        {"temperature": None, "top_p": None, "max_new_tokens": None}
    ) == GenerationConfig(128, 0.0, 1.0, [])
    gen = GenerationConfig.from_kwargs(
        {"until": "\n\n", "max_new_tokens": "16", "top_p": 0.9, "num_beams": 1}
    )
    assert gen.until == ["\n\n"] and gen.max_new_tokens == 16 and gen.top_p == 0.9
    assert GenerationConfig.from_kwargs({"until": ["A", "", None, "B"]}).until == ["A", "B"]
    assert GenerationConfig.from_kwargs({"until": ""}).until == []


def test_cut_at_strings():
    assert cut_at_strings("one. two. three", ["two", "."]) == "one"
    assert cut_at_strings("one. two. three", ["three", "two"]) == "one. "
    assert cut_at_strings("abc", []) == "abc"
    assert cut_at_strings("abc", ["", "x"]) == "abc"
    assert cut_at_strings("abc", ["a"]) == ""


def test_from_pretrained_missing_folder_is_quick_and_offline(tmp_path, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("a hub download was attempted")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    missing = tmp_path / "no_such_run" / "sft" / "final"
    start = time.perf_counter()
    with pytest.raises(ValueError, match="no such checkpoint folder") as info:
        Engine.from_pretrained(missing, device="cpu")
    assert str(missing) in str(info.value)
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "no_such_run").exists()


def test_codec_settings_that_do_not_fit_the_tower_fail_at_load(tokenizer, tmp_path):
    """A processor whose patches the checkpoint's tower cannot take: one error when the engine loads,
    not a failure inside the first forward."""
    codec = small_codec()
    codec.patch_size, codec.decode.input_size = 16, 32
    out, _ = _export(tokenizer, tmp_path / "p16", merge=1, processor_kwargs={"codec": codec})
    with pytest.raises(ValueError, match="patch 16 does not fit the checkpoint's tower 'ov_encoder'"):
        Engine.from_pretrained(out)
