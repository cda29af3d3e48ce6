"""Fixtures of the inference tests (each test module gets its own, module-scoped): a small model with
lively weights, its processor, and media files of every kind."""

from __future__ import annotations

import pytest
from infer_support import lively_model, small_processor, write_media


@pytest.fixture(scope="module")
def model(tokenizer):
    return lively_model(tokenizer, seed=3)


@pytest.fixture(scope="module")
def processor(model):
    return small_processor(model)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    return write_media(tmp_path_factory.mktemp("infer_media"))
