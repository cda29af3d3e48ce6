"""Text side of the LMM: ChatML conversations, tokenizers, sequence packing."""

from llava_ov.text.conversation import (
    EMPTY_THINK,
    IGNORE_INDEX,
    ChatFormat,
    SampleTooLongError,
    TokenizedSample,
    Turn,
    build_prompt,
    normalize_conversation,
    render_conversation,
    tokenize_conversation,
)
from llava_ov.text.packing import (
    PackedBatch,
    PackPlan,
    PaddedBatch,
    block_causal_mask,
    collate_packed,
    collate_padded,
    model_inputs,
    pack_samples,
    plan_packs,
)
from llava_ov.text.tokenizer import (
    REQUIRED_SPECIAL_TOKENS,
    MissingSpecialTokensError,
    build_tokenizer,
    load_tokenizer,
    missing_special_tokens,
)

__all__ = [
    "EMPTY_THINK",
    "IGNORE_INDEX",
    "REQUIRED_SPECIAL_TOKENS",
    "ChatFormat",
    "MissingSpecialTokensError",
    "PackPlan",
    "PackedBatch",
    "PaddedBatch",
    "SampleTooLongError",
    "TokenizedSample",
    "Turn",
    "block_causal_mask",
    "build_prompt",
    "build_tokenizer",
    "collate_packed",
    "collate_padded",
    "load_tokenizer",
    "missing_special_tokens",
    "model_inputs",
    "normalize_conversation",
    "pack_samples",
    "plan_packs",
    "render_conversation",
    "tokenize_conversation",
]
