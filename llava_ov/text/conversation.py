"""Conversations → ChatML token ids, loss labels and media spans.

A sample is ``{"conversations": [{"from": "human", "value": "<image>\\nWhat is this?"}, ...]}``
(LLaVA style) or ``{"messages": [{"role": "user", "content": ...}, ...]}`` (OpenAI style; ``content``
may also be a list of ``{"type": "text"|"image"|"video"}`` parts), or the bare list of turns.

Rendering is ChatML exactly as Qwen3's chat template does it (without tools)::

    <|im_start|>{role}\\n{content}<|im_end|>\\n

No system prompt unless the sample has one or :attr:`ChatFormat.system_prompt` is set (Qwen3 has no
default system prompt).

Thinking: we train non-thinking. Qwen3's own template always opens the assistant turns that follow the
last user turn with an empty ``<think>\\n\\n</think>\\n\\n`` block (and only those; older turns are
rendered without it), and its ``enable_thinking=False`` generation prompt ends with that block.
:attr:`ChatFormat.empty_think` (default off) reproduces exactly that rule; the block is prompt-side
(label -100), since at non-thinking inference the prompt already contains it. Off: plain ChatML both
in training and in :func:`build_prompt`, i.e. the model simply learns to answer right after
``<|im_start|>assistant\\n``.

Labels are -100 everywhere except the content tokens of every assistant turn and their closing
``<|im_end|>`` (labels are aligned with ``input_ids``; the causal-LM loss shifts them itself).
Token boundaries: the prompt side of an assistant turn (``assistant\\n`` and any think block) is
tokenized apart from the answer, as at inference, where the prompt is fixed and the model generates
the answer.

Media: each ``<image>`` / ``<video>`` placeholder is replaced by ``n`` copies of ``<|image_pad|>`` /
``<|video_pad|>`` (``n`` given by the caller per media item), wrapped in ``<|vision_start|>`` …
``<|vision_end|>`` when the tokenizer has those. ``TokenizedSample.media_spans`` holds
``(start, end, kind)`` of the pad tokens (``end`` exclusive), in media order.

Truncation (``max_length``): the sample is cut on the right. If the cut would drop or split any media
span (wrappers included), or would leave no supervised token, :class:`SampleTooLongError` is raised:
the data loader is expected to skip that sample. Text-only tails are cut silently and the sample is
flagged ``truncated=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from llava_ov.text.tokenizer import (
    IM_END,
    IM_START,
    IMAGE_PAD,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)

IGNORE_INDEX = -100
PLACEHOLDERS: dict[str, str] = {"image": "<image>", "video": "<video>"}
PAD_TOKENS: dict[str, str] = {"image": IMAGE_PAD, "video": VIDEO_PAD}
EMPTY_THINK = "<think>\n\n</think>\n\n"
# fmt: off
ROLE_ALIASES: dict[str, str] = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                                "system": "system"}
# fmt: on
_PLACEHOLDER_RE = re.compile("(" + "|".join(re.escape(p) for p in PLACEHOLDERS.values()) + ")")
_KIND_OF_PLACEHOLDER = {p: k for k, p in PLACEHOLDERS.items()}


class SampleTooLongError(ValueError):
    """The sample cannot be cut to ``max_length`` without breaking a media span or losing all targets."""


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class ChatFormat:
    """How conversations are rendered. Defaults: plain ChatML, no system prompt, no think block."""

    system_prompt: str | None = None  # used only when the conversation has no system turn
    empty_think: bool = False  # Qwen3 non-thinking format (see module docstring)


@dataclass
class TokenizedSample:
    input_ids: torch.Tensor  # LongTensor [L]
    labels: torch.Tensor  # LongTensor [L], IGNORE_INDEX outside assistant answers
    media_spans: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, kind) of pads
    truncated: bool = False

    def __len__(self) -> int:
        return int(self.input_ids.numel())

    @property
    def num_targets(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class SpecialIds:
    im_start: int
    im_end: int
    pads: dict[str, int | None]
    vision_start: int | None
    vision_end: int | None

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> SpecialIds:
        def lookup(token: str) -> int | None:  # cheap per-token lookup (get_vocab() copies the vocab)
            tid = tokenizer.convert_tokens_to_ids(token)
            return tid if tid is not None and tokenizer.convert_ids_to_tokens(tid) == token else None

        im_start, im_end = lookup(IM_START), lookup(IM_END)
        if im_start is None or im_end is None:
            raise ValueError(f"tokenizer lacks the ChatML tokens {IM_START} / {IM_END}")
        return cls(
            im_start=im_start,
            im_end=im_end,
            pads={kind: lookup(tok) for kind, tok in PAD_TOKENS.items()},
            vision_start=lookup(VISION_START),
            vision_end=lookup(VISION_END),
        )

    @property
    def wraps_media(self) -> bool:
        return self.vision_start is not None and self.vision_end is not None


# ----------------------------------------------------------------------------- parsing


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # OpenAI-style list of parts
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text":
                parts.append(part["text"])
            elif kind in PLACEHOLDERS:
                parts.append(PLACEHOLDERS[kind])
            else:
                raise ValueError(f"unsupported content part: {part!r}")
        return "".join(parts)
    raise ValueError(f"turn content must be a string or a list of parts, got {type(content).__name__}")


def _raw_turns(sample: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    name = "the conversation"
    if isinstance(sample, Mapping):
        for key in ("conversations", "messages"):
            if key in sample:
                sample, name = sample[key], f"'{key}'"
                break
        else:
            raise ValueError("sample has neither 'conversations' nor 'messages'")
    if isinstance(sample, (str, bytes, Mapping)) or not isinstance(sample, Sequence):
        raise ValueError(f"{name} must be a list of turns, got {type(sample).__name__}")
    for i, turn in enumerate(sample):
        if not isinstance(turn, (Mapping, Turn)):
            raise ValueError(f"turn {i} must be an object with 'from'/'value', got {type(turn).__name__}")
    return sample


def normalize_conversation(sample: Mapping[str, Any] | Sequence[Mapping[str, Any] | Turn]) -> list[Turn]:
    """Parse LLaVA-style or OpenAI-style turns into :class:`Turn` s with canonical roles."""
    turns = []
    for i, raw in enumerate(_raw_turns(sample)):
        if isinstance(raw, Turn):
            turns.append(raw)
            continue
        role = raw.get("from", raw.get("role"))
        content = raw.get("value", raw.get("content"))
        if role not in ROLE_ALIASES:
            raise ValueError(f"turn {i}: unknown role {role!r} (expected one of {sorted(ROLE_ALIASES)})")
        if content is None:
            raise ValueError(f"turn {i}: missing 'value'/'content'")
        turns.append(Turn(ROLE_ALIASES[role], _content_text(content)))
    if not turns:
        raise ValueError("empty conversation")
    return turns


def placeholder_kinds(turns: Sequence[Turn]) -> list[str]:
    """Media kinds of the placeholders, in order of appearance."""
    return [_KIND_OF_PLACEHOLDER[m] for t in turns for m in _PLACEHOLDER_RE.findall(t.content)]


def _default_kinds(sample: Any, count: int) -> list[str]:
    is_video = isinstance(sample, Mapping) and ("video" in sample or "videos" in sample)
    is_image = isinstance(sample, Mapping) and ("image" in sample or "images" in sample)
    return ["video" if is_video and not is_image else "image"] * count


def align_media(
    turns: list[Turn],
    num_media_tokens: Sequence[int],
    media_kinds: Sequence[str] | None = None,
    sample: Any = None,
) -> list[Turn]:
    """Check placeholders against the media items; insert them in the first user turn if absent."""
    for n in num_media_tokens:
        if int(n) < 1:
            raise ValueError(f"num_media_tokens must be >= 1 per media item, got {list(num_media_tokens)}")
    if media_kinds is not None:
        if len(media_kinds) != len(num_media_tokens):
            raise ValueError(
                f"{len(media_kinds)} media kinds but {len(num_media_tokens)} entries in num_media_tokens"
            )
        if bad := sorted(set(media_kinds) - set(PLACEHOLDERS)):
            raise ValueError(f"unknown media kinds {bad}; expected {sorted(PLACEHOLDERS)}")
    found = placeholder_kinds(turns)
    if not found and num_media_tokens:
        kinds = (
            list(media_kinds) if media_kinds is not None else _default_kinds(sample, len(num_media_tokens))
        )
        first_user = next((i for i, t in enumerate(turns) if t.role == "user"), None)
        if first_user is None:
            raise ValueError("sample has media but no user turn to put the placeholders in")
        prefix = "".join(PLACEHOLDERS[k] + "\n" for k in kinds)
        turns = list(turns)
        turns[first_user] = Turn("user", prefix + turns[first_user].content)
        return turns
    if len(found) != len(num_media_tokens):
        counts = ", ".join(f"{found.count(k)} {PLACEHOLDERS[k]}" for k in PLACEHOLDERS)
        raise ValueError(
            f"media placeholder count mismatch: the conversation has {len(found)} placeholder(s) ({counts}) "
            f"but {len(num_media_tokens)} media item(s) were given"
        )
    if media_kinds is not None and list(media_kinds) != found:
        raise ValueError(f"media kinds {list(media_kinds)} do not match the placeholders' order {found}")
    return turns


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Piece:
    text: str
    target: bool = False
    special: bool = False  # a single special token, looked up by text


def _with_system(turns: list[Turn], fmt: ChatFormat) -> list[Turn]:
    if fmt.system_prompt is not None and turns[0].role != "system":
        return [Turn("system", fmt.system_prompt), *turns]
    return turns


def _pieces(turns: Sequence[Turn], fmt: ChatFormat, add_generation_prompt: bool) -> list[_Piece]:
    last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=-1)
    pieces: list[_Piece] = []
    for i, turn in enumerate(turns):
        pieces.append(_Piece(IM_START, special=True))
        is_answer = turn.role == "assistant"
        if is_answer:
            header = f"{turn.role}\n"
            content = turn.content
            if fmt.empty_think and i > last_user:
                header += EMPTY_THINK
                content = content.lstrip("\n")
            pieces += [_Piece(header), _Piece(content, target=True)]
        else:
            pieces.append(_Piece(f"{turn.role}\n{turn.content}"))
        pieces += [_Piece(IM_END, target=is_answer, special=True), _Piece("\n")]
    if add_generation_prompt:
        pieces += [
            _Piece(IM_START, special=True),
            _Piece("assistant\n" + (EMPTY_THINK if fmt.empty_think else "")),
        ]
    return pieces


def render_conversation(
    sample: Mapping[str, Any] | Sequence[Mapping[str, Any]] | Sequence[Turn],
    fmt: ChatFormat = ChatFormat(),
    add_generation_prompt: bool = False,
) -> str:
    """The ChatML text (placeholders not expanded). Equals the tokenizer's chat template output."""
    turns = normalize_conversation(sample)
    return "".join(p.text for p in _pieces(_with_system(turns, fmt), fmt, add_generation_prompt))


# ----------------------------------------------------------------------------- tokenizing


def _encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _tokenize_pieces(
    pieces: Sequence[_Piece],
    tokenizer: PreTrainedTokenizerBase,
    ids: SpecialIds,
    num_media_tokens: Sequence[int],
) -> tuple[list[int], list[int], list[tuple[int, int, str]]]:
    input_ids: list[int] = []
    labels: list[int] = []
    spans: list[tuple[int, int, str]] = []
    media = iter(num_media_tokens)

    def emit(tokens: list[int], target: bool) -> None:
        input_ids.extend(tokens)
        labels.extend(tokens if target else [IGNORE_INDEX] * len(tokens))

    for piece in pieces:
        if piece.special:
            emit([ids.im_start if piece.text == IM_START else ids.im_end], piece.target)
            continue
        for chunk in _PLACEHOLDER_RE.split(piece.text):
            kind = _KIND_OF_PLACEHOLDER.get(chunk)
            if kind is None:
                emit(_encode_text(tokenizer, chunk), piece.target)
                continue
            pad = ids.pads[kind]
            if pad is None:
                raise ValueError(f"tokenizer has no {PAD_TOKENS[kind]} token for {kind} media")
            n = int(next(media))
            if ids.wraps_media:
                emit([ids.vision_start], False)
            spans.append((len(input_ids), len(input_ids) + n, kind))
            emit([pad] * n, False)
            if ids.wraps_media:
                emit([ids.vision_end], False)
    return input_ids, labels, spans


def _truncate(sample: TokenizedSample, max_length: int, wrap: int) -> TokenizedSample:
    if len(sample) <= max_length:
        return sample
    for start, end, kind in sample.media_spans:
        if end + wrap > max_length:
            raise SampleTooLongError(
                f"sample of {len(sample)} tokens exceeds max_length={max_length} and the cut would break "
                f"the {kind} span [{start}, {end}); skip this sample"
            )
    cut = TokenizedSample(
        sample.input_ids[:max_length].clone(),
        sample.labels[:max_length].clone(),
        list(sample.media_spans),
        truncated=True,
    )
    if cut.num_targets == 0:
        raise SampleTooLongError(
            f"sample of {len(sample)} tokens cut to max_length={max_length} keeps no assistant token; skip it"
        )
    return cut


def _prepare_turns(sample, num_media_tokens, media_kinds, fmt) -> list[Turn]:
    turns = normalize_conversation(sample)
    turns = align_media(turns, num_media_tokens, media_kinds, sample)
    return _with_system(turns, fmt)


def tokenize_conversation(
    sample: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    num_media_tokens: Sequence[int] = (),
    media_kinds: Sequence[str] | None = None,
    fmt: ChatFormat = ChatFormat(),
    max_length: int | None = None,
) -> TokenizedSample:
    """Tokenize a training conversation (see module docstring for the exact rules).

    ``num_media_tokens[i]``: number of pad tokens for the i-th media item (order of the placeholders).
    ``media_kinds``: kinds of the media items; needed only to insert missing placeholders for videos
    (default: "video" if the sample has a "video"/"videos" key and no image key, else "image").
    """
    turns = _prepare_turns(sample, num_media_tokens, media_kinds, fmt)
    if not any(t.role == "assistant" for t in turns):
        raise ValueError("conversation has no assistant turn: nothing to train on")
    ids = SpecialIds.from_tokenizer(tokenizer)
    input_ids, labels, spans = _tokenize_pieces(_pieces(turns, fmt, False), tokenizer, ids, num_media_tokens)
    out = TokenizedSample(
        torch.tensor(input_ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long), spans
    )
    if max_length is not None:
        out = _truncate(out, max_length, wrap=int(ids.wraps_media))
    return out


def build_prompt(
    sample: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    num_media_tokens: Sequence[int] = (),
    media_kinds: Sequence[str] | None = None,
    fmt: ChatFormat = ChatFormat(),
) -> TokenizedSample:
    """Inference prompt: the conversation so far + ``<|im_start|>assistant\\n`` (+ empty think block
    if ``fmt.empty_think``). Labels are all -100. The conversation must not end with an assistant turn.
    """
    turns = _prepare_turns(sample, num_media_tokens, media_kinds, fmt)
    if turns[-1].role == "assistant":
        raise ValueError("build_prompt: the conversation already ends with an assistant turn")
    ids = SpecialIds.from_tokenizer(tokenizer)
    input_ids, _, spans = _tokenize_pieces(_pieces(turns, fmt, True), tokenizer, ids, num_media_tokens)
    tensor = torch.tensor(input_ids, dtype=torch.long)
    return TokenizedSample(tensor, torch.full_like(tensor, IGNORE_INDEX), spans)
