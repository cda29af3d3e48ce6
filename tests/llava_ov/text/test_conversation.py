from __future__ import annotations

import pytest

from llava_ov.text.conversation import (
    EMPTY_THINK,
    IGNORE_INDEX,
    ChatFormat,
    SampleTooLongError,
    build_prompt,
    normalize_conversation,
    render_conversation,
    tokenize_conversation,
)


def _tid(tokenizer, token: str) -> int:
    return tokenizer.convert_tokens_to_ids(token)


def _target_runs(sample) -> list[list[int]]:
    """Maximal runs of consecutive supervised positions, as token-id lists."""
    runs, current = [], []
    for tok, lab in zip(sample.input_ids.tolist(), sample.labels.tolist()):
        if lab == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert lab == tok
            current.append(tok)
    return runs + ([current] if current else [])


def _openai(sample):
    return [{"role": t.role, "content": t.content} for t in normalize_conversation(sample)]


def test_two_turn_label_masking(tokenizer, two_turn):
    out = tokenize_conversation(two_turn, tokenizer)
    answers = [tokenizer.decode(run) for run in _target_runs(out)]
    assert answers == ["A red cat on a mat.<|im_end|>", "There are 3 apples.<|im_end|>"]
    # everything else (system, user, role headers, the newline after <|im_end|>) is -100
    assert out.num_targets == sum(len(r) for r in _target_runs(out))
    text = tokenizer.decode(out.input_ids)
    assert text == render_conversation(two_turn)
    assert out.media_spans == [] and not out.truncated


def test_openai_keys_equal_llava_keys(tokenizer, two_turn):
    a = tokenize_conversation(two_turn, tokenizer)
    b = tokenize_conversation({"messages": _openai(two_turn)}, tokenizer)
    assert a.input_ids.equal(b.input_ids) and a.labels.equal(b.labels)


@pytest.mark.parametrize("empty_think", [False, True])
def test_render_matches_chat_template(tokenizer, two_turn, empty_think):
    messages = _openai(two_turn)
    kwargs = {"enable_thinking": False} if empty_think else {}
    fmt = ChatFormat(empty_think=empty_think)
    expected = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    assert render_conversation(two_turn, fmt) == expected
    out = tokenize_conversation(two_turn, tokenizer, fmt=fmt)
    assert tokenizer.decode(out.input_ids) == expected
    if not empty_think:  # ids equal tokenizing the whole rendered text at once
        assert out.input_ids.tolist() == tokenizer.encode(expected, add_special_tokens=False)
    prompt = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True, **kwargs
    )
    assert tokenizer.decode(build_prompt(messages[:-1], tokenizer, fmt=fmt).input_ids) == prompt


def test_empty_think_placement_and_labels(tokenizer, two_turn):
    out = tokenize_conversation(two_turn, tokenizer, fmt=ChatFormat(empty_think=True))
    text = tokenizer.decode(out.input_ids)
    # Qwen3 rule: only the assistant turns after the last user turn get the empty think block
    assert text.count(EMPTY_THINK) == 1 and text.endswith(EMPTY_THINK + "There are 3 apples.<|im_end|>\n")
    answers = [tokenizer.decode(run) for run in _target_runs(out)]
    assert answers == ["A red cat on a mat.<|im_end|>", "There are 3 apples.<|im_end|>"]
    prompt = build_prompt(two_turn["conversations"][:4], tokenizer, fmt=ChatFormat(empty_think=True))
    assert tokenizer.decode(prompt.input_ids).endswith("<|im_start|>assistant\n" + EMPTY_THINK)


def test_system_prompt_option(tokenizer):
    conv = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    plain = tokenizer.decode(tokenize_conversation(conv, tokenizer).input_ids)
    assert plain.startswith("<|im_start|>user\nhi")
    with_sys = tokenize_conversation(conv, tokenizer, fmt=ChatFormat(system_prompt="Be brief."))
    assert tokenizer.decode(with_sys.input_ids) == "<|im_start|>system\nBe brief.<|im_end|>\n" + plain


def test_build_prompt_ends_with_assistant_header(tokenizer):
    prompt = build_prompt([{"role": "user", "content": "<image>\nWhat?"}], tokenizer, num_media_tokens=[4])
    assert tokenizer.decode(prompt.input_ids).endswith("What?<|im_end|>\n<|im_start|>assistant\n")
    assert (prompt.labels == IGNORE_INDEX).all()
    start = prompt.input_ids.tolist().index(_tid(tokenizer, "<|vision_start|>")) + 1
    assert prompt.media_spans == [(start, start + 4, "image")]
    with pytest.raises(ValueError, match="ends with an assistant"):
        build_prompt([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], tokenizer)


def _check_span(tokenizer, sample, span, n):
    start, end, kind = span
    ids = sample.input_ids.tolist()
    assert end - start == n
    assert ids[start:end] == [_tid(tokenizer, f"<|{kind}_pad|>")] * n
    assert ids[start - 1] == _tid(tokenizer, "<|vision_start|>")
    assert ids[end] == _tid(tokenizer, "<|vision_end|>")
    assert (sample.labels[start - 1 : end + 1] == IGNORE_INDEX).all()


def test_image_sample(tokenizer):
    sample = {
        "image": "x.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is shown?"},
            {"from": "gpt", "value": "A cat."},
        ],
    }
    out = tokenize_conversation(sample, tokenizer, num_media_tokens=[7])
    assert len(out.media_spans) == 1
    _check_span(tokenizer, out, out.media_spans[0], 7)
    assert (out.input_ids == _tid(tokenizer, "<|image_pad|>")).sum() == 7
    assert [tokenizer.decode(r) for r in _target_runs(out)] == ["A cat.<|im_end|>"]


def test_video_and_images_in_order(tokenizer):
    conv = [
        {"role": "user", "content": "<video>\nThen <image> and <image>?"},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Again <image>"},
        {"role": "assistant", "content": "Yes."},
    ]
    counts = [5, 2, 3, 4]
    out = tokenize_conversation(conv, tokenizer, num_media_tokens=counts)
    assert [k for _, _, k in out.media_spans] == ["video", "image", "image", "image"]
    for span, n in zip(out.media_spans, counts):
        _check_span(tokenizer, out, span, n)
    assert (out.input_ids == _tid(tokenizer, "<|video_pad|>")).sum() == 5
    assert (out.input_ids == _tid(tokenizer, "<|image_pad|>")).sum() == 9
    starts = [s for s, _, _ in out.media_spans]
    assert starts == sorted(starts)


def test_missing_placeholder_is_prepended(tokenizer):
    conv = [{"from": "human", "value": "Describe."}, {"from": "gpt", "value": "Ok."}]
    out = tokenize_conversation({"video": "v.mp4", "conversations": conv}, tokenizer, num_media_tokens=[3])
    assert out.media_spans[0][2] == "video"
    text = tokenizer.decode(out.input_ids)
    assert text.startswith(
        "<|im_start|>user\n<|vision_start|>" + "<|video_pad|>" * 3 + "<|vision_end|>\nDescribe."
    )
    two = tokenize_conversation(conv, tokenizer, num_media_tokens=[2, 1], media_kinds=["image", "video"])
    assert [k for _, _, k in two.media_spans] == ["image", "video"]


@pytest.mark.parametrize(
    ("value", "counts", "match"),
    [
        ("<image><image> two", [4], "2 placeholder"),
        ("<image> one", [4, 4], "2 media item"),
        ("<image> one", [], "1 placeholder"),
        ("<image> one", [0], ">= 1"),
    ],
)
def test_placeholder_media_mismatch(tokenizer, value, counts, match):
    conv = [{"from": "human", "value": value}, {"from": "gpt", "value": "x"}]
    with pytest.raises(ValueError, match=match):
        tokenize_conversation(conv, tokenizer, num_media_tokens=counts)


def test_kind_mismatch_and_bad_input(tokenizer):
    conv = [{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "x"}]
    with pytest.raises(ValueError, match="do not match"):
        tokenize_conversation(conv, tokenizer, num_media_tokens=[2], media_kinds=["video"])
    with pytest.raises(ValueError, match="unknown role"):
        tokenize_conversation([{"from": "bot", "value": "x"}], tokenizer)
    with pytest.raises(ValueError, match="no assistant turn"):
        tokenize_conversation([{"from": "human", "value": "x"}], tokenizer)


def test_openai_content_parts(tokenizer):
    msgs = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhat?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    ]
    out = tokenize_conversation({"messages": msgs}, tokenizer, num_media_tokens=[3])
    ref = tokenize_conversation(
        [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}],
        tokenizer,
        num_media_tokens=[3],
    )
    assert out.input_ids.equal(ref.input_ids) and out.media_spans == ref.media_spans


def test_truncation_policy(tokenizer):
    conv = [
        {"from": "human", "value": "<image>\nWhat is shown in the image?"},
        {"from": "gpt", "value": "A red cat sits on a blue mat. " * 4},
    ]
    full = tokenize_conversation(conv, tokenizer, num_media_tokens=[6])
    _, end, _ = full.media_spans[0]
    first_target = int((full.labels != IGNORE_INDEX).nonzero()[0])
    # text tail cut: fine, flagged
    cut = tokenize_conversation(conv, tokenizer, num_media_tokens=[6], max_length=first_target + 3)
    assert len(cut) == first_target + 3 and cut.truncated and cut.num_targets == 3
    assert cut.input_ids.equal(full.input_ids[: first_target + 3]) and cut.media_spans == full.media_spans
    # no cut needed: untouched
    same = tokenize_conversation(conv, tokenizer, num_media_tokens=[6], max_length=len(full))
    assert not same.truncated and same.input_ids.equal(full.input_ids)
    # cut inside the media span (or its <|vision_end|>) → error, never a partial span
    for max_length in (end - 2, end):
        with pytest.raises(SampleTooLongError, match="image span"):
            tokenize_conversation(conv, tokenizer, num_media_tokens=[6], max_length=max_length)
    # cut before any answer token → error
    with pytest.raises(SampleTooLongError, match="no assistant token"):
        tokenize_conversation(conv, tokenizer, num_media_tokens=[6], max_length=first_target)


def _bare_tokenizer(specials):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(["user assistant hello"], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_tokenizer_without_vision_wrappers():
    tok = _bare_tokenizer(["<|im_start|>", "<|im_end|>", "<|image_pad|>"])
    conv = [{"from": "human", "value": "<image>\nhello"}, {"from": "gpt", "value": "hello"}]
    out = tokenize_conversation(conv, tok, num_media_tokens=[3])
    (start, end, kind), pad = out.media_spans[0], _tid(tok, "<|image_pad|>")
    assert out.input_ids[start:end].tolist() == [pad] * 3 and kind == "image"
    assert tok.decode(out.input_ids[start - 1 : end + 1]) == "\n" + "<|image_pad|>" * 3 + "\n"
    video = [{"from": "human", "value": "<video>"}, {"from": "gpt", "value": "x"}]
    with pytest.raises(ValueError, match=r"no <\|video_pad\|> token"):
        tokenize_conversation(video, tok, num_media_tokens=[2])
    with pytest.raises(ValueError, match="ChatML"):
        tokenize_conversation(conv, _bare_tokenizer([]), num_media_tokens=[3])
