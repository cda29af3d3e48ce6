"""Held-out evaluation: greedy answers to the eval prompts, accuracy overall and per question type.

Prompts come from :func:`llava_ov.data.eval_items` (this rank's share of ``eval_sources``); answers
are normalised (lower case, punctuation and a think block stripped, first word when the reference is
one word) and compared with ``meta["answer"]``. Per question type (``meta["qtype"]``) the chance level
is ``1 / |answers seen for that type|`` and the majority baseline the share of its most common answer.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from llava_ov.data import DataConfig, LMMItem, eval_items
from llava_ov.infer import Engine, GenerationConfig, LlavaOVProcessor
from llava_ov.report import format_table as render_table
from llava_ov.train import distributed as D
from llava_ov.train.config import EvalConfig

_THINK_RE = re.compile(r"<think>.*?</think>", re.S)
_PUNCT_RE = re.compile(r"[^\w\s]")


def normalize_answer(text: str, one_word: bool = False) -> str:
    text = _THINK_RE.sub(" ", text).lower()
    text = " ".join(_PUNCT_RE.sub(" ", text).split())
    return text.split(" ")[0] if one_word and text else text


def _batches(items: Iterable[Any], size: int) -> Iterable[list[LMMItem]]:
    chunk: list[LMMItem] = []
    for item in items:
        if isinstance(item, LMMItem):
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def predict(
    model: nn.Module, tokenizer: Any, data_cfg: DataConfig, env: D.DistEnv, cfg: EvalConfig
) -> list[dict]:
    """This rank's records ``{id, qtype, answer, prediction, correct}``: the eval prompts answered by
    the inference :class:`Engine` (the one chat and the lmms-eval plugin use)."""
    stream = eval_items(data_cfg, tokenizer, model.token_counter(), env.rank, env.world_size)
    limit = None if cfg.max_items is None else -(-cfg.max_items // env.world_size)
    engine = Engine(model, LlavaOVProcessor(tokenizer, tokens_for=model.token_counter()), cfg.batch_size)
    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens)
    records: list[dict[str, Any]] = []
    for chunk in _batches(stream, cfg.batch_size):
        chunk = chunk[: None if limit is None else max(limit - len(records), 0)]
        if not chunk:
            break
        for item, text in zip(chunk, engine.generate_items(chunk, gen)):
            records.append(
                score_answer(
                    item.meta.get("id", item.key),
                    item.meta.get("qtype", "all"),
                    str(item.meta.get("answer", "")),
                    text,
                )
            )
    return records


def score_answer(sample_id: str, qtype: str, answer: str, prediction: str) -> dict[str, Any]:
    """One record: reference and prediction normalised (first word of the prediction when the
    reference is one word), ``correct`` when equal. The lmms-eval local tasks score with this too."""
    ref = normalize_answer(answer)
    pred = normalize_answer(prediction, one_word=" " not in ref)
    return {"id": sample_id, "qtype": qtype, "answer": ref, "prediction": pred, "correct": pred == ref}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy overall and per qtype, with chance (1/|answers|) and majority baselines."""
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_type[r["qtype"]].append(r)
    per_type = {}
    for qtype in sorted(by_type):
        rs = by_type[qtype]
        answers = Counter(r["answer"] for r in rs)
        per_type[qtype] = {
            "n": len(rs),
            "accuracy": sum(r["correct"] for r in rs) / len(rs),
            "chance": 1.0 / len(answers),
            "majority": max(answers.values()) / len(rs),
            "answers": sorted(answers),
        }
    n = len(records)
    overall = sum(r["correct"] for r in records) / n if n else 0.0
    chance = sum(t["chance"] * t["n"] for t in per_type.values()) / n if n else 0.0
    return {"n": n, "accuracy": overall, "chance": chance, "per_type": per_type}


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table: one line per question type, then the overall line."""
    header = ["question type", "n", "accuracy", "chance", "majority"]
    rows = [
        [str(qtype), str(t["n"]), f"{t['accuracy']:.3f}", f"{t['chance']:.3f}", f"{t['majority']:.3f}"]
        for qtype, t in summary["per_type"].items()
    ]
    rows.append(["overall", str(summary["n"]), f"{summary['accuracy']:.3f}", f"{summary['chance']:.3f}"])
    return render_table(header, rows, align="lrrrr", min_widths=(14, 5, 9, 7, 9), sep=" ", rule=False)


def evaluate(
    model: nn.Module,
    tokenizer: Any,
    data_cfg: DataConfig,
    env: D.DistEnv,
    cfg: EvalConfig,
    out_path: Path | None = None,
) -> dict[str, Any] | None:
    """Collective: every rank answers its share; rank 0 gets (and writes) the summary, others None."""
    if not data_cfg.eval_sources:
        return None
    records = predict(model, tokenizer, data_cfg, env, cfg)
    gathered = D.all_gather_object(records)
    if not env.is_main:
        return None
    everything = [r for part in gathered for r in part]
    summary = summarize(everything)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(summary | {"records": everything}, indent=1))
    return summary


__all__ = ["evaluate", "format_table", "normalize_answer", "predict", "score_answer", "summarize"]
