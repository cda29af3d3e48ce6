"""The inference engine: batched generation and continuation log-likelihoods of a trained LMM.

One engine serves ``scripts/chat.py``, the trainer's held-out evaluation and the lmms-eval plugin
(nanochat's "one engine shared by chat and eval"): prompts come from the :class:`LlavaOVProcessor`
saved with the checkpoint, batches from :func:`collate_items`, tokens from
:meth:`LlavaOVModel.generate`.

* :meth:`Engine.generate` — requests ``(text, media)`` (text: a user message or a list of turns;
  media: a list of :data:`Media`) → answers. Greedy unless ``temperature > 0``; ``max_new_tokens``;
  ``until`` stop strings end a row early and are cut from its answer.
* :meth:`Engine.loglikelihood` — ``(context, continuation, media)`` → the log-probability of the
  continuation's tokens as the start of the assistant's answer, their count, and whether greedy
  decoding would produce exactly them.
* Bad requests: with ``on_error="skip"`` a request whose media cannot be read (or that cannot be
  turned into a prompt, e.g. an empty continuation) gets an empty answer (``None`` log-likelihood)
  and is recorded in :attr:`Engine.failures` (``(index, message)``, reset by every call); the others
  go on. ``on_error="raise"`` (default) raises the :class:`VideoDecodeError` / ``ValueError``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from encoder.codec import PatchCache, VideoDecodeError
from llava_ov.data.dataset import LMMItem, collate_items
from llava_ov.infer.processor import LlavaOVProcessor, Media, codec_overrides
from llava_ov.model.lmm import LlavaOVModel
from llava_ov.text.conversation import IGNORE_INDEX


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    until: list[str] = field(default_factory=list)  # stop strings (cut from the answer)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], default_max_new_tokens: int = 128) -> GenerationConfig:
        """From lmms-eval style ``gen_kwargs`` (``max_new_tokens``, ``temperature``, ``do_sample``,
        ``top_p``, ``until`` as a string or list); other keys are ignored."""
        until = kwargs.get("until") or []
        # lmms-eval's convention: ``do_sample`` decides; a temperature without it is ignored (greedy)
        do_sample = bool(kwargs.get("do_sample", False))
        temperature = float(kwargs.get("temperature") or 0.0) if do_sample else 0.0
        return cls(
            max_new_tokens=int(kwargs.get("max_new_tokens") or default_max_new_tokens),
            temperature=temperature or (1.0 if do_sample else 0.0),
            top_p=float(kwargs.get("top_p") or 1.0),
            until=[until] if isinstance(until, str) else [u for u in until if u],
        )


@dataclass
class Request:
    text: str | Sequence[Mapping[str, Any]]
    media: Sequence[Media] = ()


@dataclass
class LogLikelihood:
    logprob: float  # sum over the continuation's tokens (natural log)
    num_tokens: int
    is_greedy: bool


def cut_at_strings(text: str, until: Sequence[str]) -> str:
    """``text`` before the first occurrence of any stop string."""
    cut = min((i for i in (text.find(u) for u in until if u) if i >= 0), default=len(text))
    return text[:cut]


def resolve_device(device: str = "auto") -> torch.device:
    """auto: ``cuda:{LOCAL_RANK}`` when CUDA is available, else CPU. ValueError for a device this
    machine does not have (CUDA asked for without it, a GPU index out of range, an unknown name)."""
    if device == "auto":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r} (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this machine has no CUDA GPU (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if dtype not in names:
        raise ValueError(f"dtype must be auto or one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


def _as_request(r: Request | tuple | Mapping[str, Any]) -> Request:
    if isinstance(r, Request):
        return r
    if isinstance(r, Mapping):
        return Request(r["text"], r.get("media", ()))
    text, media = (r[0], r[1]) if len(r) > 1 else (r[0], ())
    return Request(text, media)


class Engine:
    """See the module docstring. ``batch_size``: prompts per forward / ``generate`` call."""

    def __init__(self, model: LlavaOVModel, processor: LlavaOVProcessor, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.failures: list[tuple[int, str]] = []

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str = "auto",
        dtype: str | torch.dtype | None = "auto",
        attn_implementation: str | None = None,
        codec: Mapping[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 1,
    ) -> Engine:
        """Model + processor of a stage export. ``codec``: overrides by name (``mode``, ``budget``,
        ``num_frames``, ``input_size``, ``image_max_side``) of the checkpoint's codec settings;
        ``cache_dir``: an on-disk :class:`PatchCache` for media files."""
        cache = PatchCache(Path(cache_dir)) if cache_dir is not None else None
        processor = LlavaOVProcessor.from_pretrained(path, cache=cache)
        if codec:
            processor.codec = codec_overrides(processor.codec, **codec)
        dev = resolve_device(device)
        overrides: dict[str, Any] = {}
        if attn_implementation is not None:
            overrides["llm"] = {"attn_implementation": attn_implementation}
        model = LlavaOVModel.from_pretrained(path, dtype=resolve_dtype(dtype, dev), **overrides).to(dev)
        spec = model.vision_tower.spec
        if processor.codec.mode not in spec.modes or processor.codec.patch_size != spec.patch_size:
            raise ValueError(
                f"codec mode {processor.codec.mode!r} with patch {processor.codec.patch_size} does not fit "
                f"the checkpoint's tower {model.config.tower.name!r} (modes {list(spec.modes)}, "
                f"patch {spec.patch_size})"
            )
        return cls(model, processor, batch_size)

    # ----------------------------------------------------------------- preparing

    def _items(self, build, requests: Sequence[Any], on_error: str) -> Iterator[tuple[int, LMMItem | None]]:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.failures = []
        return self._built(build, requests, on_error)

    def _built(self, build, requests: Sequence[Any], on_error: str) -> Iterator[tuple[int, LMMItem | None]]:
        for i, r in enumerate(requests):
            try:
                yield i, build(r)
            except (VideoDecodeError, ValueError) as e:
                if on_error == "raise":
                    raise
                self.failures.append((i, str(e)))
                yield i, None

    def _chunks(self, pairs: Iterator[tuple[int, LMMItem | None]]) -> Iterator[list[tuple[int, LMMItem]]]:
        chunk: list[tuple[int, LMMItem]] = []
        for i, item in pairs:
            if item is None:
                continue
            chunk.append((i, item))
            if len(chunk) == self.batch_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    # ----------------------------------------------------------------- generation

    @torch.no_grad()
    def generate_items(self, items: Sequence[LMMItem], gen: GenerationConfig | None = None) -> list[str]:
        """Answers to ready prompt items (:meth:`LlavaOVProcessor.prompt`, or the trainer's eval items),
        ``batch_size`` at a time."""
        gen = gen or GenerationConfig()
        out: list[str] = []
        for start in range(0, len(items), self.batch_size):
            out += self._generate_batch(list(items[start : start + self.batch_size]), gen)
        return out

    def _generate_batch(self, items: list[LMMItem], gen: GenerationConfig) -> list[str]:
        batch = collate_items(items)
        kw: dict[str, Any] = {}
        if gen.temperature > 0:
            kw |= {"temperature": gen.temperature, "top_p": gen.top_p}
        if gen.until:
            kw |= {"stop_strings": list(gen.until), "tokenizer": self.processor.tokenizer}
        ids = self.model.generate(
            batch, max_new_tokens=gen.max_new_tokens, do_sample=gen.temperature > 0, **kw
        )
        return [cut_at_strings(self.processor.decode(row), gen.until).strip() for row in ids]

    def generate(
        self,
        requests: Sequence[Request | tuple],
        gen: GenerationConfig | None = None,
        on_error: str = "raise",
    ) -> list[str]:
        """One answer per request, in order (see the module docstring)."""
        answers = [""] * len(requests)
        reqs = [_as_request(r) for r in requests]
        pairs = self._items(lambda r: self.processor.prompt(r.text, r.media), reqs, on_error)
        for chunk in self._chunks(pairs):
            texts = self.generate_items([item for _, item in chunk], gen)
            for (i, _), text in zip(chunk, texts):
                answers[i] = text
        return answers

    # ----------------------------------------------------------------- scoring

    @torch.no_grad()
    def loglikelihood(
        self, requests: Sequence[tuple[Any, str, Sequence[Media]]], on_error: str = "raise"
    ) -> list[LogLikelihood | None]:
        """Per ``(context, continuation, media)``: see the module docstring."""
        results: list[LogLikelihood | None] = [None] * len(requests)
        pairs = self._items(
            lambda r: self.processor.scored(r[0], r[1], r[2] if len(r) > 2 else ()), requests, on_error
        )
        for chunk in self._chunks(pairs):
            for (i, _), res in zip(chunk, self._score_batch([item for _, item in chunk])):
                results[i] = res
        return results

    def _score_batch(self, items: list[LMMItem]) -> list[LogLikelihood]:
        batch = collate_items(items, padded=True, pad_token_id=self.model.token_ids.pad)
        logits = self.model(batch, return_logits=True).logits
        labels = batch.text.labels[:, 1:].to(logits.device)
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
        out = []
        for row in range(labels.shape[0]):
            mask = labels[row] != IGNORE_INDEX
            targets = labels[row][mask]
            picked = logp[row][mask]
            lp = picked.gather(-1, targets[:, None])[:, 0]
            greedy = bool((picked.argmax(-1) == targets).all())
            out.append(LogLikelihood(float(lp.sum()), int(mask.sum()), greedy))
        return out


def mean_nll(result: LogLikelihood | None) -> float:
    """Mean negative log-likelihood per continuation token (inf for a failed request)."""
    return math.inf if result is None else -result.logprob / max(result.num_tokens, 1)


__all__ = [
    "Engine",
    "GenerationConfig",
    "LogLikelihood",
    "Request",
    "cut_at_strings",
    "mean_nll",
    "resolve_device",
    "resolve_dtype",
]
