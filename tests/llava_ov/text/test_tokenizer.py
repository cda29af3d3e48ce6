from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from llava_ov.text.tokenizer import (
    REQUIRED_SPECIAL_TOKENS,
    THINK_TOKENS,
    MissingSpecialTokensError,
    build_tokenizer,
    load_tokenizer,
)

ODD_TEXTS = [
    "plain ascii",
    "  leading spaces\tand\ttabs\n\nand blank lines  ",
    "never seen: Ωμέγα ж 🚀🚀 \u200b zero-width, \x00 nul, \r\n crlf",
    "specials inline <|im_start|>user\n<|image_pad|><think></think> <|endoftext|>",
    "",
]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_round_trip_arbitrary_text(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_single_ids(tokenizer):
    for token in (*REQUIRED_SPECIAL_TOKENS, *THINK_TOKENS):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
        assert tokenizer.convert_ids_to_tokens(ids) == [token]
    ids = [tokenizer.convert_tokens_to_ids(t) for t in (*REQUIRED_SPECIAL_TOKENS, *THINK_TOKENS)]
    assert len(set(ids)) == len(ids)
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    # byte-level: a pad run never merges, each pad is one token
    assert tokenizer.encode("<|image_pad|>" * 5, add_special_tokens=False) == ids[5:6] * 5


def test_save_reload(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = ODD_TEXTS[3] + ODD_TEXTS[2]
    assert again.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert (again.pad_token, again.eos_token) == (tokenizer.pad_token, tokenizer.eos_token)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert again.apply_chat_template(messages, tokenize=False) == tokenizer.apply_chat_template(
        messages, tokenize=False
    )
    assert load_tokenizer(tmp_path).get_vocab() == tokenizer.get_vocab()


def test_build_with_out_dir(tmp_path):
    tok = build_tokenizer(["tiny corpus"] * 3, vocab_size=300, out_dir=tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").exists()
    assert len(AutoTokenizer.from_pretrained(tmp_path / "tok")) == len(tok)


def test_vocab_too_small():
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(["x"], vocab_size=100)


def test_load_tokenizer_lists_missing_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bare = PreTrainedTokenizerFast(tokenizer_object=backend)
    bare.add_special_tokens({"extra_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    bare.save_pretrained(tmp_path)
    with pytest.raises(MissingSpecialTokensError) as err:
        load_tokenizer(tmp_path)
    listed = str(err.value).rsplit(": ", 1)[1].split(", ")
    assert listed == ["<|endoftext|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
