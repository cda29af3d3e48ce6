"""Peak memory of an image task does not grow with its length: the plugin loads a batch's media when it
answers that batch (lmms-eval hands over doc ids; the docs' images are decoded from the dataset only
when the plugin asks for them).

A real ``datasets`` image task on disk (``Image()`` feature, large compressible PNG stills, read with
``load_from_disk`` as lmms-eval's tasks are) answered by the plugin on a tiny checkpoint, in a fresh
spawned process per measurement: the RSS high-water mark is reset to the current RSS after a warm-up
batch, then ``generate_until`` answers N requests. Before the change the plugin decoded every image of
the task first, so the peak grew by one decoded image per request (about 7 MB here).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from peak_memory import in_fresh_process, peak_added_mb  # noqa: E402  (the benchmarks' fresh-process RSS probe)

pytest.importorskip("lmms_eval")
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

SIDE = 1536  # a decoded RGB still: 1536 * 1536 * 3 bytes = 6.75 MiB
IMAGE_MB = SIDE * SIDE * 3 / 2**20
SHORT, LONG = 4, 28
TASK, SPLIT = "memory_task", "test"
CORPUS = ["What is shown in the image? A red cat sits on a blue mat.", "How many apples are on the table?"]


# ----------------------------------------------------------------------------- the task and checkpoint


def make_checkpoint(folder: Path) -> Path:
    import torch

    from encoder.codec import CodecConfig
    from llava_ov.infer import LlavaOVProcessor
    from llava_ov.model import build_model, debug_config
    from llava_ov.text.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(CORPUS * 8, vocab_size=300)
    torch.manual_seed(0)
    model = build_model(debug_config(), tokenizer)
    codec = CodecConfig(mode="frames", num_frames=2)
    codec.decode.input_size = 28
    out = model.save_pretrained(folder)
    LlavaOVProcessor(model.tokenizer, codec, tokens_for=model.token_counter()).save_pretrained(out)
    return out


def write_image_task(folder: Path, n: int) -> Path:
    """``n`` docs with a large still each (a smooth pattern: small PNGs, full-size decoded images)."""
    import datasets
    from PIL import Image

    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    images = [
        Image.fromarray(
            np.stack([(xx + 7 * i) % 256, (yy + 3 * i) % 256, (xx + yy) // 13 % 256], -1).astype(np.uint8)
        )
        for i in range(n)
    ]
    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": images, "question": ["What is shown?"] * n}, features=features)
    ds.save_to_disk(str(folder))
    return folder


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]  # what the upstream image tasks return


def _answer_task(ckpt: str, data: str, n: int) -> tuple[float | None, int]:
    """In a fresh process: (peak MB added while answering n image requests, answers given)."""
    import datasets
    import torch
    from lmms_eval.api.instance import Instance

    from llava_ov.lmms_eval_plugin.model import LlavaOVLmms

    torch.set_num_threads(1)
    for var in DIST_VARS:  # a process group an earlier in-process test left in the parent's environment
        os.environ.pop(var, None)
    lm = LlavaOVLmms(pretrained=ckpt, cache=False, image_max_side=56, max_new_tokens=2, batch_size=2)
    lm.task_dict = {TASK: {SPLIT: datasets.load_from_disk(data)}}

    def requests(ids):
        return [
            Instance(
                request_type="generate_until",
                idx=0,
                metadata={"task": TASK, "doc_id": i, "repeats": 1},
                arguments=("What is shown?", {"max_new_tokens": 2}, doc_to_visual, i, TASK, SPLIT),
            )
            for i in ids
        ]

    lm.generate_until(requests(range(2)))  # warm-up: model workspaces, lazy imports
    answers: list[str] = []
    mb = peak_added_mb(lambda reqs: answers.extend(lm.generate_until(reqs)), requests(range(n)))
    return mb, len(answers)


def peak_mb(ckpt: Path, data: Path, n: int) -> float | None:
    mb, answered = in_fresh_process(_answer_task, str(ckpt), str(data), n)
    assert answered == n
    return mb


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("memory")
    return make_checkpoint(root / "ckpt"), write_image_task(root / "data", LONG)


def test_image_task_peak_memory_does_not_grow_with_its_length(task):
    ckpt, data = task
    short = peak_mb(ckpt, data, SHORT)
    if short is None:
        pytest.skip("no /proc/self/clear_refs: peak RSS cannot be reset here")
    long = peak_mb(ckpt, data, LONG)
    # all decoded up front, the long run would hold (LONG - SHORT) more images: 162 MB here
    assert long - short < 3 * IMAGE_MB, (short, long)
    assert long < 6 * IMAGE_MB, (short, long)  # a batch (2 stills) and its transient copies, not the task
