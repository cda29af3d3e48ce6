"""Shared fixtures for the LMM text-side tests: one tiny tokenizer trained on a local corpus."""

from __future__ import annotations

import pytest

CORPUS = [
    "What is shown in the image? A red cat sits on a blue mat.",
    "Describe the video. A dog runs across the park and jumps over a bench.",
    "You are a helpful assistant. Answer briefly and precisely.",
    "How many apples are on the table? There are 3 apples and 12 oranges.",
    "The quick brown fox jumps over the lazy dog; numbers 0123456789.",
    "Ünïcödé text, emojis 🎉 and CJK 图像 视频 are byte-level encoded.",
]


@pytest.fixture(scope="session")
def tokenizer():
    from llava_ov.text.tokenizer import build_tokenizer

    return build_tokenizer(CORPUS * 4, vocab_size=420)


@pytest.fixture
def two_turn():
    return {
        "conversations": [
            {"from": "system", "value": "You are a helpful assistant."},
            {"from": "human", "value": "What is shown?"},
            {"from": "gpt", "value": "A red cat on a mat."},
            {"from": "human", "value": "How many apples?"},
            {"from": "gpt", "value": "There are 3 apples."},
        ]
    }
