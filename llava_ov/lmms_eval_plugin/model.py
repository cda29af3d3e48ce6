"""The lmms-eval model class: requests → the inference :class:`Engine` of a stage export.

``--model llava_ov --model_args pretrained=CKPT[,key=value...]``. Keys: ``mode``, ``budget``,
``num_frames``, ``input_size``, ``image_max_side`` (override the checkpoint's codec settings; default:
what it was trained with), ``device`` (auto: ``cuda:{local rank}`` or CPU), ``dtype`` (auto: bf16 on
GPU, fp32 on CPU), ``attn_implementation`` (the LLM's: sdpa, eager, flash_attention_2),
``max_new_tokens`` (when a task sets none), ``cache_dir`` (on-disk patch selections, default
``${LLAVA_OV_CACHE:-.cache/llava_ov}/patch_cache``; ``cache=false`` turns it off). An unknown key is
an error. The batch size is lmms-eval's own ``--batch_size`` (it always passes it; naming it in
``model_args`` too is a duplicate-keyword error upstream).

Visuals: video paths are patchified on the fly with the codec settings (through the cache), images
(paths or PIL) at native resolution, a list of more than :data:`FRAME_LIST_MIN` PIL images is the
frames of one clip; a repeated identical image is given once. A request whose media cannot be read
gets an empty answer (``loglikelihood``: ``inf``), one warning line naming the file, and is counted;
the task goes on.

``loglikelihood`` returns ``(negative log-likelihood of the continuation, is_greedy)``: lmms-eval
0.7.3's multiple-choice scoring takes the *argmin* of the first value (it expects a loss, as its own
LLaVA models return). Each pair travels inside lmms-eval's ``GenerationResult`` (its typed response
wrapper): 0.7.3 stringifies bare tuples before scoring, which breaks every multiple-choice task. The continuation is scored as the start of the assistant's answer, its leading
target delimiter (a space) dropped, as answers are trained.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger
from PIL import Image
from tqdm import tqdm

from encoder.codec import PatchSelection, VideoDecodeError
from encoder.config import ConfigError
from llava_ov.infer import Engine, GenerationConfig
from llava_ov.text.conversation import PLACEHOLDERS

FRAME_LIST_MIN = 4
CODEC_KEYS = ("mode", "budget", "num_frames", "input_size", "image_max_side")


def _default_cache_dir() -> Path:
    return Path(os.environ.get("LLAVA_OV_CACHE") or ".cache/llava_ov") / "patch_cache"


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def media_list(visuals: Any) -> list[Any]:
    """lmms-eval visuals → our media items (see the module docstring)."""
    if visuals is None:
        return []
    if isinstance(visuals, (str, Path, Image.Image)):
        visuals = [visuals]
    items = [v for v in visuals if v is not None]
    if len(items) > FRAME_LIST_MIN and all(isinstance(v, Image.Image) for v in items):
        return [items]  # the frames of one clip
    unique: list[Any] = []
    for v in items:
        if isinstance(v, Image.Image) and any(_same_image(v, u) for u in unique):
            continue
        unique.append(v)
    return unique


def _same_image(a: Any, b: Any) -> bool:
    return isinstance(b, Image.Image) and (a is b or (a.size == b.size and a.mode == b.mode and a.tobytes() == b.tobytes()))


def _batch_size(value: Any) -> int:
    """lmms-eval's ``--batch_size``: an int, or ``auto`` / ``auto:N`` (no memory probing here: 1)."""
    text = str(value).strip().lower()
    if text.startswith("auto"):
        logger.warning(f"llava_ov: batch_size {value!r}: automatic sizing is not supported, using 1")
        return 1
    return int(text)


def answer_start(continuation: str) -> str:
    """A continuation as the start of the assistant's answer: lmms-eval's target delimiter (one
    leading space) dropped, since answers are trained right after ``assistant\\n``."""
    return continuation[1:] if continuation.startswith(" ") and continuation.strip() else continuation


def _media_names(media: Sequence[Any]) -> str:
    return ", ".join(str(m) if isinstance(m, (str, Path)) else type(m).__name__ for m in media) or "no media"


class LlavaOVLmms(lmms):
    is_simple = True

    def __init__(self, pretrained: str, mode: str | None = None, budget: int | None = None,
                 num_frames: int | None = None, input_size: int | None = None, image_max_side: int | None = None,
                 device: str | None = "auto", dtype: str = "auto", attn_implementation: str | None = None,
                 batch_size: int | str = 1, max_new_tokens: int = 128, cache: bool | str = True,
                 cache_dir: str | None = None, max_batch_size: Any = None, **unknown: Any) -> None:
        super().__init__()
        if unknown:
            raise ValueError(f"llava_ov: unknown model_args {sorted(unknown)}; valid: pretrained, {', '.join(CODEC_KEYS)}, "
                             "device, dtype, attn_implementation, max_new_tokens, cache, cache_dir (batch size: --batch_size)")
        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        if device in (None, "", "auto") and torch.cuda.is_available():
            device = f"cuda:{self.accelerator.local_process_index}"
        codec = {"mode": mode, "budget": budget, "num_frames": num_frames, "input_size": input_size,
                 "image_max_side": image_max_side}
        cache_path = None
        if _flag(cache):
            cache_path = Path(cache_dir) if cache_dir else _default_cache_dir()
        try:
            self.engine = Engine.from_pretrained(
                pretrained, device=device or "auto", dtype=dtype, attn_implementation=attn_implementation,
                codec={k: v for k, v in codec.items() if v is not None}, cache_dir=cache_path,
                batch_size=_batch_size(batch_size))
        except (ConfigError, ValueError, OSError) as e:
            raise ValueError(f"llava_ov: cannot load {pretrained}: {e}") from None
        self._device = self.engine.model.device
        self.max_new_tokens = int(max_new_tokens)
        self.pretrained = str(pretrained)
        self.skipped = 0  # requests answered empty because their media could not be read
        c = self.engine.processor.codec
        logger.info(f"llava_ov: {pretrained} on {self._device}, codec mode={c.mode} budget={c.select.budget} "
                    f"frames={c.decode.num_frames if c.mode in ('codec', 'random') else c.num_frames} input={c.decode.input_size}, "
                    f"patch cache {cache_path or 'off'}, rank {self.rank}/{self.world_size}")

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size

    # ----------------------------------------------------------------- helpers

    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _visuals(self, doc_to_visual: Any, task: str, split: str, doc_id: int) -> list[Any]:
        return media_list(doc_to_visual(self._doc(task, split, doc_id)) if doc_to_visual is not None else None)

    def _skip(self, task: str, doc_id: int, media: Sequence[Any], error: str) -> None:
        self.skipped += 1
        logger.warning(f"llava_ov: {task} doc {doc_id}: unreadable media ({error}); empty answer [{_media_names(media)}]")

    def _report(self, kind: str, total: int, before: int) -> None:
        cache = self.engine.processor.cache
        stats = f", patch cache {cache.hits} hits / {cache.misses} misses" if cache is not None else ""
        logger.info(f"llava_ov: {kind}: {total} requests, {self.skipped - before} with unreadable media (empty){stats}")

    def _progress(self, n: int, what: str) -> tqdm:
        return tqdm(total=n, desc=f"llava_ov {what}", disable=self.rank != 0)

    # ----------------------------------------------------------------- lmms API

    def generate_until(self, requests: list[Instance]) -> list[str]:
        before, answers = self.skipped, [""] * len(requests)
        bar = self._progress(len(requests), "generate")
        jobs: dict[str, list[tuple[int, Any, list[Any]]]] = {}
        for i, req in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            key = json.dumps(gen_kwargs or {}, sort_keys=True, default=str)
            jobs.setdefault(key, []).append((i, (context, doc_id, task), self._visuals(doc_to_visual, task, split, doc_id)))
        for key, group in jobs.items():
            gen = GenerationConfig.from_kwargs(json.loads(key), self.max_new_tokens)
            for start in range(0, len(group), self.batch_size):
                chunk = group[start:start + self.batch_size]
                texts = self.engine.generate([(c[0], media) for _, c, media in chunk], gen, on_error="skip")
                for j, message in self.engine.failures:
                    _, (_, doc_id, task), media = chunk[j]
                    self._skip(task, doc_id, media, message)
                for (i, _, _), text in zip(chunk, texts):
                    answers[i] = text
                bar.update(len(chunk))
        bar.close()
        self._report("generate_until", len(requests), before)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """Every choice of a multiple-choice doc is one request; the doc's media are read once per call
        (not once per choice) and handed to the engine as selections."""
        before, results = self.skipped, []
        loaded: dict[tuple[str, str, int], list[Any] | VideoDecodeError] = {}
        bar = self._progress(len(requests), "loglikelihood")
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            scored, slots, out = [], [], [None] * len(chunk)
            for j, req in enumerate(chunk):
                context, continuation, doc_to_visual, doc_id, task, split = req.args
                if callable(continuation):
                    continuation = continuation(self._doc(task, split, doc_id))
                media = self._doc_media(loaded, doc_to_visual, task, split, doc_id)
                if isinstance(media, VideoDecodeError):
                    self._skip(task, doc_id, [media.path], str(media))
                    continue
                scored.append((context, answer_start(str(continuation)), media))
                slots.append((j, doc_id, task))
            for (j, _, _), res in zip(slots, self.engine.loglikelihood(scored, on_error="skip")):
                out[j] = res
            for k, message in self.engine.failures:
                self._skip(slots[k][2], slots[k][1], [], message)
            # Wrapped in GenerationResult: lmms-eval 0.7.3 turns any other non-string response into its
            # str() before scoring (unwrap_generation_output), which breaks (loss, is_greedy) pairs.
            results += [GenerationResult(text=(-r.logprob if r is not None else math.inf, bool(r and r.is_greedy)))
                        for r in out]
            bar.update(len(chunk))
        bar.close()
        self._report("loglikelihood", len(requests), before)
        return results

    def _doc_media(self, loaded: dict, doc_to_visual: Any, task: str, split: str, doc_id: int) -> Any:
        """The doc's media as selections (memoised in ``loaded``), or the VideoDecodeError reading them."""
        key = (task, split, doc_id)
        if key not in loaded:
            try:
                visuals = self._visuals(doc_to_visual, task, split, doc_id)
                loaded[key] = [self.engine.processor.load_media(v)[0] for v in visuals]
            except VideoDecodeError as e:
                loaded[key] = e
        return loaded[key]

    def generate_until_multi_round(self, requests: list[Instance]) -> list[Any]:
        """Rounds driven by the task's ``doc_to_text(doc, previous_output=, round_idx=,
        previous_round_info=)`` → ``(visuals, context, terminal, round_results, info)``; the conversation
        (questions, answers, media) carries over between rounds; ``previous_output`` is the task's
        ``round_results`` of the round before plus the new answer; the result is the task's
        ``round_results`` at the terminal round."""
        before, results = self.skipped, []
        bar = self._progress(len(requests), "multi-round")
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = req.args
            results.append(self._multi_round(context, gen_kwargs or {}, doc_to_visual, doc_to_text, doc_id, task, split))
            bar.update(1)
        bar.close()
        self._report("generate_until_multi_round", len(requests), before)
        return results

    def _multi_round(self, context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split) -> Any:
        doc = self._doc(task, split, doc_id)
        gen = GenerationConfig.from_kwargs({k: v for k, v in gen_kwargs.items() if k != "until"}, self.max_new_tokens)
        visuals = self._visuals(doc_to_visual, task, split, doc_id)
        turns: list[dict[str, str]] = []
        media: list[PatchSelection] = []
        outputs: list[str] = []
        info = None
        for round_idx in range(64):
            if round_idx > 0:
                visuals, context, terminal, round_results, info = doc_to_text(
                    doc, previous_output=list(outputs), round_idx=round_idx, previous_round_info=info)
                if terminal:
                    return round_results
                outputs = list(round_results)  # as lmms-eval's own models: the task's view of the rounds
                visuals = media_list(visuals)
            try:
                loaded = [self.engine.processor.load_media(v) for v in visuals or []]
            except VideoDecodeError as e:
                self._skip(task, doc_id, visuals, str(e))
                return outputs or [""]
            text = str(context)
            if loaded and not any(p in text for p in PLACEHOLDERS.values()):
                text = self.engine.processor.placeholders([kind for _, kind in loaded]) + text
            media += [sel for sel, _ in loaded]
            turns.append({"from": "human", "value": text})
            answer = self.engine.generate([(turns, media)], gen)[0]
            outputs.append(answer)
            turns.append({"from": "gpt", "value": answer})
        return outputs

    def clean(self) -> None:
        super().clean()
        self.engine = None


__all__ = ["FRAME_LIST_MIN", "LlavaOVLmms", "answer_start", "media_list"]
