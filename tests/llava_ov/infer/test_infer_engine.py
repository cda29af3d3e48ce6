"""Inference, the Engine: log-likelihoods against a hand computation, batching invariance, stop
strings, sampling, bad media, generation settings and loading.

The LLM is a tiny random Qwen3 with a large init range (``initializer_range=0.3``) so that greedy decoding
produces varied, media-dependent text instead of one repeated token."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from infer_support import export_checkpoint, small_codec

from encoder.codec import VideoDecodeError
from llava_ov.data.dataset import collate_items, collate_media
from llava_ov.infer import Engine, GenerationConfig, cut_at_strings

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPTS = ["What happens?", "What is this?", "Describe the video.", "How many apples?", "Hi", "Is it red?"]


@pytest.fixture
def engine(model, processor):
    return Engine(model, processor, batch_size=1)


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
    out, _ = export_checkpoint(tokenizer, tmp_path / "p16", merge=1, processor_kwargs={"codec": codec})
    with pytest.raises(ValueError, match="patch 16 does not fit the checkpoint's tower 'ov_encoder'"):
        Engine.from_pretrained(out)
