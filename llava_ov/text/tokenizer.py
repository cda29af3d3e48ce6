"""Tokenizers for the LMM text side.

Two entry points:

* :func:`build_tokenizer` trains a tiny byte-level BPE tokenizer on a local corpus (used by the
  synthetic CPU run: no hub access needed). It carries the Qwen special tokens, so every code path
  that works with it also works with Qwen3's real tokenizer.
* :func:`load_tokenizer` loads a real tokenizer (e.g. ``Qwen/Qwen3-1.7B``, hub id or local path) and
  checks that the special tokens the LMM relies on exist and are single tokens.

Special-token conventions follow the Qwen3 post-trained checkpoints: ``pad_token`` is
``<|endoftext|>`` and ``eos_token`` is ``<|im_end|>`` (the token that ends every chat turn, i.e. where
generation stops). ``<think>`` / ``</think>`` are plain added tokens (single ids, not "special"), as in
Qwen3.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

#: Special tokens the LMM needs; all present in Qwen3's tokenizer.
REQUIRED_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    VISION_START,
    VISION_END,
    IMAGE_PAD,
    VIDEO_PAD,
)
#: Added (non-special) tokens, single ids in Qwen3.
THINK_TOKENS: tuple[str, ...] = (THINK_OPEN, THINK_CLOSE)

# ChatML as Qwen3 renders it (no tools). Default: plain ChatML, no system prompt unless given.
# ``enable_thinking=False`` reproduces Qwen3's non-thinking format: an empty think block opens every
# assistant turn that follows the last user turn, and the generation prompt.
CHATML_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set no_think = enable_thinking is defined and enable_thinking is false -%}"
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' -}}"
    "{%- if m['role'] == 'assistant' and no_think and loop.index0 > ns.last_user -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' + m['content'].lstrip('\\n') -}}"
    "{%- else -%}{{- m['content'] -}}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if no_think -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}{%- endif -%}"
)


class MissingSpecialTokensError(ValueError):
    """The tokenizer lacks special tokens the LMM needs (or they are not single tokens)."""


def _train_bpe(texts: Iterable[str], vocab_size: int, specials: Sequence[str]):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | PathLike[str] | None = None,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with Qwen's special tokens and a ChatML chat template.

    Byte-level: any text round-trips through encode/decode, whatever the corpus. ``vocab_size``
    counts the 256 byte symbols and the special tokens, so it must exceed 256 + 9. The special tokens
    get the lowest ids (``<|endoftext|>`` is 0). With ``out_dir`` the tokenizer is saved there with
    ``save_pretrained`` (reload with ``AutoTokenizer.from_pretrained(out_dir)``).
    """
    specials = (*REQUIRED_SPECIAL_TOKENS, *THINK_TOKENS)
    if vocab_size < 256 + len(specials) + 1:
        raise ValueError(f"vocab_size={vocab_size} too small: need > {256 + len(specials)}")
    backend = _train_bpe(texts, vocab_size, specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        extra_special_tokens=list(REQUIRED_SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 20,
    )
    # <think> tags: added tokens (single ids) but not "special", so decode(skip_special_tokens) keeps them.
    tokenizer.add_tokens(list(THINK_TOKENS), special_tokens=False)
    tokenizer.chat_template = CHATML_TEMPLATE
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def missing_special_tokens(
    tokenizer: PreTrainedTokenizerBase, required: Sequence[str] = REQUIRED_SPECIAL_TOKENS
) -> list[str]:
    """Tokens of ``required`` that are absent from ``tokenizer`` or not encoded as one id."""
    vocab = tokenizer.get_vocab()
    missing = []
    for token in required:
        ids = tokenizer.encode(token, add_special_tokens=False)
        if token not in vocab or ids != [vocab[token]]:
            missing.append(token)
    return missing


def load_tokenizer(
    name_or_path: str | PathLike[str],
    required: Sequence[str] = REQUIRED_SPECIAL_TOKENS,
    **kwargs,
) -> PreTrainedTokenizerBase:
    """Load a tokenizer (hub id such as ``Qwen/Qwen3-1.7B`` or a local directory) and validate it.

    Raises :class:`MissingSpecialTokensError` listing every token of ``required`` that is missing.
    A tokenizer without a pad token gets ``<|endoftext|>`` as pad token.
    """
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    missing = missing_special_tokens(tokenizer, required)
    if missing:
        raise MissingSpecialTokensError(
            f"tokenizer {str(name_or_path)!r} lacks required special tokens (or splits them): "
            f"{', '.join(missing)}"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = ENDOFTEXT
    return tokenizer
