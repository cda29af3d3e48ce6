"""The lmms-eval model class: requests → the inference :class:`Engine` of a stage export.

``--model llava_ov --model_args pretrained=CKPT[,key=value...]``. Keys: ``mode``, ``budget``,
``num_frames``, ``input_size``, ``image_max_side`` (override the checkpoint's codec settings; default:
what it was trained with), ``device`` (auto: ``cuda:{local rank}`` or CPU), ``dtype`` (auto: bf16 on
GPU, fp32 on CPU), ``attn_implementation`` (the LLM's: sdpa, eager, flash_attention_2),
``max_new_tokens`` (when a task sets none), ``cache_dir`` (on-disk patch selections, default
``${LLAVA_OV_CACHE:-.cache/llava_ov}/patch_cache``; ``cache=false`` turns it off), ``failures`` (a
file: one JSON line per sample whose media failed is appended as soon as it fails, ``{"task",
"split", "doc_id", "reason", "media"}``, reason ``missing``, ``undecodable``, ``not frames`` or
``unusable``; default: none). An unknown key is an error. The batch size is lmms-eval's own
``--batch_size`` (it always passes it; naming it in ``model_args`` too is a duplicate-keyword error
upstream).

Visuals (:mod:`.media`): video paths are patchified on the fly with the codec settings (through the
cache), images (paths or PIL) at native resolution; a folder of image files (sorted by name) and a
list of more than :data:`FRAME_LIST_MIN` frames (PIL images or image paths) are one clip, sampled to
the checkpoint's frame count and patchified like a video; a repeated identical image is given once.
Media are loaded batch by batch, when the batch is answered (never a whole task's images at once).

A sample whose media cannot be read (missing, undecodable, a folder without image files; also when
the task's ``doc_to_visual`` raises ``OSError``/``ValueError``) gets an empty answer
(``loglikelihood``: ``inf`` for every choice, so the task's argmin takes the first one and may even
score it right: the task's own scoring does not know the sample failed), one warning line naming the
task, doc and file, a line in the ``failures`` file, and is counted; the task goes on. Not every
failure reaches the plugin: several upstream tasks (videomme, perceptiontest_val_mc, mlvu_dev) call
``sys.exit`` in their ``doc_to_visual`` when a video file is missing, which ends the whole lmms-eval
process before the plugin sees the sample.

``loglikelihood`` returns ``(negative log-likelihood of the continuation, is_greedy)``: lmms-eval
0.7.3's multiple-choice scoring takes the *argmin* of the first value (it expects a loss, as its own
LLaVA models return). Each pair travels inside lmms-eval's ``GenerationResult`` (its typed response
wrapper): 0.7.3 stringifies bare tuples before scoring, which breaks every multiple-choice task. The
continuation is scored as the start of the assistant's answer, its leading target delimiter (a space)
dropped, as answers are trained.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from encoder.codec import PatchSelection, VideoDecodeError
from encoder.typed_config import ConfigError
from llava_ov.infer import Engine, GenerationConfig
from llava_ov.lmms_eval_plugin.media import (
    FRAME_LIST_MIN,
    FailureLog,
    failure_reason,
    media_list,
    media_names,
)
from llava_ov.text.conversation import PLACEHOLDERS

CODEC_KEYS = ("mode", "budget", "num_frames", "input_size", "image_max_side")


def _default_cache_dir() -> Path:
    return Path(os.environ.get("LLAVA_OV_CACHE") or ".cache/llava_ov") / "patch_cache"


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


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


class LlavaOVLmms(lmms):
    is_simple = True

    def __init__(
        self,
        pretrained: str,
        mode: str | None = None,
        budget: int | None = None,
        num_frames: int | None = None,
        input_size: int | None = None,
        image_max_side: int | None = None,
        device: str | None = "auto",
        dtype: str = "auto",
        attn_implementation: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int = 128,
        cache: bool | str = True,
        cache_dir: str | None = None,
        failures: str | None = None,
        max_batch_size: Any = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise ValueError(
                f"llava_ov: unknown model_args {sorted(unknown)}; "
                f"valid: pretrained, {', '.join(CODEC_KEYS)}, "
                "device, dtype, attn_implementation, max_new_tokens, cache, cache_dir, failures "
                "(batch size: --batch_size)"
            )
        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        if device in (None, "", "auto") and torch.cuda.is_available():
            device = f"cuda:{self.accelerator.local_process_index}"
        codec = {
            "mode": mode,
            "budget": budget,
            "num_frames": num_frames,
            "input_size": input_size,
            "image_max_side": image_max_side,
        }
        cache_path = None
        if _flag(cache):
            cache_path = Path(cache_dir) if cache_dir else _default_cache_dir()
        try:
            self.engine = Engine.from_pretrained(
                pretrained,
                device=device or "auto",
                dtype=dtype,
                attn_implementation=attn_implementation,
                codec={k: v for k, v in codec.items() if v is not None},
                cache_dir=cache_path,
                batch_size=_batch_size(batch_size),
            )
        except (ConfigError, ValueError, OSError) as e:
            raise ValueError(f"llava_ov: cannot load {pretrained}: {e}") from None
        self._device = self.engine.model.device
        self.max_new_tokens = int(max_new_tokens)
        self.pretrained = str(pretrained)
        self.skipped = 0  # requests answered empty because their media could not be read
        self.failures = FailureLog(failures)
        c = self.engine.processor.codec
        logger.info(
            f"llava_ov: {pretrained} on {self._device}, codec mode={c.mode} budget={c.select.budget} "
            f"frames={c.decode.num_frames if c.mode in ('codec', 'random') else c.num_frames} "
            f"input={c.decode.input_size}, "
            f"patch cache {cache_path or 'off'}, failures {self.failures.path or 'not recorded'}, "
            f"rank {self.rank}/{self.world_size}"
        )

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
        return media_list(
            doc_to_visual(self._doc(task, split, doc_id)) if doc_to_visual is not None else None
        )

    def _load(
        self, visuals: Any, task: str, split: str, doc_id: int
    ) -> list[tuple[PatchSelection, str]] | None:
        """The doc's media as (selection, kind) pairs, read now; None (failure recorded) when they cannot
        be. ``visuals``: the task's ``doc_to_visual`` (called here, so a doc's images are decoded only
        when its batch is answered) or a list of visuals a multi-round task returned."""
        media: list[Any] = []
        try:
            media = self._visuals(visuals, task, split, doc_id) if callable(visuals) else media_list(visuals)
            return [self.engine.processor.load_media(m) for m in media]
        except (
            OSError,
            ValueError,
        ) as e:  # VideoDecodeError is a ValueError; OSError: the task's own reading
            name = (
                e.path
                if isinstance(e, VideoDecodeError)
                else str(getattr(e, "filename", None) or (media_names(media) if media else "doc_to_visual"))
            )
            self._fail(task, split, doc_id, failure_reason(e), name, str(e), media)
            return None

    def _fail(
        self,
        task: str,
        split: str,
        doc_id: int,
        reason: str,
        name: str,
        error: str,
        media: Sequence[Any] = (),
    ) -> None:
        """One sample's media failed: a warning line, a line in the failures file."""
        logger.warning(
            f"llava_ov: {task} doc {doc_id}: unreadable media ({error}); empty answer "
            f"[{media_names(media) if media else name}]"
        )
        self.failures.record(task, split, doc_id, reason, name)

    def _report(self, kind: str, total: int, before: int) -> None:
        cache = self.engine.processor.cache
        stats = f", patch cache {cache.hits} hits / {cache.misses} misses" if cache is not None else ""
        logger.info(
            f"llava_ov: {kind}: {total} requests, "
            f"{self.skipped - before} with unreadable media (empty){stats}"
        )

    def _progress(self, n: int, what: str) -> tqdm:
        return tqdm(total=n, desc=f"llava_ov {what}", disable=self.rank != 0)

    # ----------------------------------------------------------------- lmms API

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Requests grouped by generation settings, answered ``batch_size`` at a time; each batch's media
        are read when it is answered."""
        before, answers = self.skipped, [""] * len(requests)
        bar = self._progress(len(requests), "generate")
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1] or {}, sort_keys=True, default=str), []).append(i)
        for key, indices in groups.items():
            gen = GenerationConfig.from_kwargs(json.loads(key), self.max_new_tokens)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch, slots = [], []
                for i in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    loaded = self._load(doc_to_visual, task, split, doc_id)
                    if loaded is None:
                        self.skipped += 1
                        continue
                    batch.append((context, [sel for sel, _ in loaded]))
                    slots.append(i)
                texts = self.engine.generate(batch, gen, on_error="skip")
                for j, message in self.engine.failures:
                    _, _, _, doc_id, task, split = requests[slots[j]].args
                    self.skipped += 1
                    self._fail(task, split, doc_id, "unusable", "prompt", message)
                for i, text in zip(slots, texts):
                    answers[i] = text
                del batch, texts
                bar.update(len(chunk))
        bar.close()
        self._report("generate_until", len(requests), before)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """Every choice of a multiple-choice doc is one request; the doc's media are read once per call
        (not once per choice), handed to the engine as selections and dropped after its last choice."""
        before, results = self.skipped, []
        remaining = Counter((r.args[4], r.args[5], r.args[3]) for r in requests)
        loaded: dict[tuple[str, str, int], list[PatchSelection] | None] = {}
        bar = self._progress(len(requests), "loglikelihood")
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            scored, slots, out = [], [], [None] * len(chunk)
            for j, req in enumerate(chunk):
                context, continuation, doc_to_visual, doc_id, task, split = req.args
                key = (task, split, doc_id)
                if key not in loaded:
                    pairs = self._load(doc_to_visual, task, split, doc_id)
                    loaded[key] = None if pairs is None else [sel for sel, _ in pairs]
                media = loaded[key]
                remaining[key] -= 1
                if not remaining[key]:
                    del loaded[key]
                if media is None:
                    self.skipped += 1
                    continue
                if callable(continuation):
                    continuation = continuation(self._doc(task, split, doc_id))
                scored.append((context, answer_start(str(continuation)), media))
                slots.append((j, doc_id, task, split))
            for (j, *_), res in zip(slots, self.engine.loglikelihood(scored, on_error="skip")):
                out[j] = res
            for k, message in self.engine.failures:
                _, doc_id, task, split = slots[k]
                self.skipped += 1
                self._fail(task, split, doc_id, "unusable", "prompt", message)
            # Wrapped in GenerationResult: lmms-eval 0.7.3 turns any other non-string response into its
            # str() before scoring (unwrap_generation_output), which breaks (loss, is_greedy) pairs.
            results += [
                GenerationResult(text=(-r.logprob if r is not None else math.inf, bool(r and r.is_greedy)))
                for r in out
            ]
            bar.update(len(chunk))
        bar.close()
        self._report("loglikelihood", len(requests), before)
        return results

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
            results.append(
                self._multi_round(context, gen_kwargs or {}, doc_to_visual, doc_to_text, doc_id, task, split)
            )
            bar.update(1)
        bar.close()
        self._report("generate_until_multi_round", len(requests), before)
        return results

    def _multi_round(self, context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split) -> Any:
        doc = self._doc(task, split, doc_id)
        gen = GenerationConfig.from_kwargs(
            {k: v for k, v in gen_kwargs.items() if k != "until"}, self.max_new_tokens
        )
        visuals: Any = doc_to_visual
        turns: list[dict[str, str]] = []
        media: list[PatchSelection] = []
        outputs: list[str] = []
        info = None
        for round_idx in range(64):
            if round_idx > 0:
                visuals, context, terminal, round_results, info = doc_to_text(
                    doc, previous_output=list(outputs), round_idx=round_idx, previous_round_info=info
                )
                if terminal:
                    return round_results
                outputs = list(round_results)  # as lmms-eval's own models: the task's view of the rounds
            loaded = self._load(visuals, task, split, doc_id)
            if loaded is None:
                self.skipped += 1
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
