"""Helpers for the eval/ tests: load the eval scripts as modules and write lmms-eval-shaped results."""

from __future__ import annotations

import json
import os
from pathlib import Path

from encoder.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
EVAL_DIR = REPO / "eval"

MVBENCH = [
    "mvbench_action_sequence",
    "mvbench_moving_count",
    "mvbench_action_prediction",
    "mvbench_episodic_reasoning",
    "mvbench_action_antonym",
    "mvbench_action_count",
    "mvbench_scene_transition",
    "mvbench_object_shuffle",
    "mvbench_object_existence",
    "mvbench_fine_grained_pose",
    "mvbench_unexpected_action",
    "mvbench_moving_direction",
    "mvbench_state_change",
    "mvbench_object_interaction",
    "mvbench_character_order",
    "mvbench_action_localization",
    "mvbench_counterfactual_inference",
    "mvbench_fine_grained_action",
    "mvbench_moving_attribute",
    "mvbench_egocentric_navigation",
]
VIDEO_MMMU = ["video_mmmu_adaptation", "video_mmmu_comprehension", "video_mmmu_perception"]


def load_eval_module(name: str):
    """eval/<name>.py as a module (eval/ is a folder of scripts, not a package), under the name the eval
    scripts load it by."""
    return load_script(EVAL_DIR / f"{name}.py")


#: the 16 standard benchmarks in report order: the stand-ins' list
STANDARD = list(load_eval_module("standin_rows").STANDARD)


def write_results(
    path: Path,
    tasks: dict,
    groups: dict | None = None,
    n_samples: dict | None = None,
    date: str = "20260101_120000",
    mtime: float | None = None,
) -> Path:
    """A ``*_results.json`` with the real top-level layout.

    ``tasks``: task -> {metric key: value}; ``groups``: group -> {subtask: {metric key: value}};
    ``n_samples``: task -> (original, effective) or (original,) for files without 'effective'.
    """
    groups = groups or {}
    n_samples = n_samples or {}
    results, group_subtasks = {}, {}
    for group, subs in groups.items():
        results[group] = {" ": " ", "alias": group}
        group_subtasks[group] = list(subs)
        for sub, metrics in subs.items():
            results[sub] = {"alias": f" - {sub}", **metrics}
    for task, metrics in tasks.items():
        results[task] = {"alias": task, **metrics}
        group_subtasks[task] = []
    counts = {}
    for task, pair in n_samples.items():
        counts[task] = (
            {"original": pair[0]} if len(pair) == 1 else {"original": pair[0], "effective": pair[1]}
        )
    data = {
        "results": results,
        "group_subtasks": group_subtasks,
        "configs": {t: {"task": t} for t in results},
        "versions": {t: 0.0 for t in results},
        "n-shot": {t: 0 for t in results},
        "higher_is_better": {},
        "n-samples": counts,
        "config": {"model": "llava_ov", "model_args": "pretrained=/x/sft/final"},
        "lmms_eval_version": "0.7.3",
        "date": date,
        "model_name": "/x/sft/final",
        "model_name_sanitized": "sft__final",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def tiny_export(folder: Path) -> Path:
    """A tiny random LMM export (llava_ov.json, weights, processor.json) that answers in milliseconds:
    the debug tower, a 2-layer LLM, 2 frames of 28² per video. Its answers are noise (but not empty:
    temporalbench's aggregation crashes on an empty answer); the stand-in runs only check that every task
    goes through end to end."""
    import torch

    from encoder.codec import CodecConfig
    from llava_ov.infer import LlavaOVProcessor
    from llava_ov.model import build_model, debug_config
    from llava_ov.text.tokenizer import build_tokenizer

    corpus = [
        "Which colour is the square? A red square on a white page.",
        "Which way does the object move? It moves left, right, up or down.",
        "Answer with the option's letter from the given choices directly: A B C D E.",
    ]
    tokenizer = build_tokenizer(corpus * 4, vocab_size=400)
    torch.manual_seed(2)
    model = build_model(debug_config(initializer_range=0.3), tokenizer)  # non-empty greedy answers
    # random weights may pick byte tokens of control characters, which no trained model writes and which
    # mmbench's submission .xlsx (openpyxl) rejects: give them a zero output row (logit 0, below the
    # best of the other tokens); the head is tied, so their input embedding is zero too
    with torch.no_grad():
        head = model.llm.get_output_embeddings().weight
        for token_id in range(len(model.tokenizer)):
            text = model.tokenizer.decode([token_id])
            if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
                head[token_id].zero_()
    codec = CodecConfig(mode="frames", num_frames=2)
    codec.decode.input_size = 28
    out = model.save_pretrained(folder)
    LlavaOVProcessor(model.tokenizer, codec, tokens_for=model.token_counter()).save_pretrained(out)
    return Path(out)
