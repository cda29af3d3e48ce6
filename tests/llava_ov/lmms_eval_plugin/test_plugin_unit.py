"""The lmms-eval model class on a tiny saved checkpoint, driven directly with hand-built lmms-eval
``Instance`` objects: visuals → media rules, model_args, generate_until, the multi-round protocol and
multiple-choice log-likelihoods."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import GenerationResult, Instance  # noqa: E402

from encoder.codec import CodecConfig  # noqa: E402
from encoder.codec.synthetic import make_clip  # noqa: E402
from llava_ov.infer import GenerationConfig, LlavaOVProcessor  # noqa: E402
from llava_ov.lmms_eval_plugin.model import FRAME_LIST_MIN, LlavaOVLmms, media_list  # noqa: E402
from llava_ov.model import build_model, debug_config  # noqa: E402

CORPUS = [
    "What is shown in the image? A red cat sits on a blue mat.",
    "Describe the video. A dog runs across the park and jumps over a bench.",
    "How many apples are on the table? There are 3 apples and 12 oranges.",
    "The quick brown fox jumps over the lazy dog; numbers 0123456789.",
]
TASK, SPLIT = "toy_task", "test"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("plugin")
    video = make_clip(d / "clip.mp4", "mover", width=56, height=56, num_frames=8).path
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 42, 3), dtype=np.uint8)).save(
        d / "still.png"
    )
    return {"dir": d, "video": video, "image": str(d / "still.png"), "missing": str(d / "gone_clip.mp4")}


@pytest.fixture(scope="module")
def ckpt(files) -> Path:
    from llava_ov.text.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(CORPUS * 4, vocab_size=400)
    torch.manual_seed(2)
    model = build_model(debug_config(initializer_range=0.3), tokenizer)  # varied greedy answers
    codec = CodecConfig(mode="frames", num_frames=2)
    codec.decode.input_size = 28
    out = model.save_pretrained(files["dir"] / "ckpt")
    LlavaOVProcessor(model.tokenizer, codec, tokens_for=model.token_counter()).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lm(ckpt, files) -> LlavaOVLmms:
    return LlavaOVLmms(pretrained=str(ckpt), cache_dir=str(files["dir"] / "patch_cache"), batch_size=2)


def pil(seed: int, size=(28, 28)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def instance(kind: str, args: tuple, doc_id: int) -> Instance:
    return Instance(
        request_type=kind, arguments=args, idx=0, metadata={"task": TASK, "doc_id": doc_id, "repeats": 1}
    )


def doc_to_visual(doc):
    return doc["visuals"]


# ----------------------------------------------------------------------------- media_list


def test_media_list_rules():
    assert media_list(None) == []
    assert media_list("clip.mp4") == ["clip.mp4"]
    assert media_list(Path("a.png")) == [Path("a.png")]
    assert media_list([None, "clip.mp4", None]) == ["clip.mp4"]
    frames = [pil(i) for i in range(FRAME_LIST_MIN + 1)]
    assert media_list(frames) == [frames]  # more than FRAME_LIST_MIN PIL images: the frames of one clip
    clip = media_list(frames)[0]
    assert len(clip) == FRAME_LIST_MIN + 1 and all(a is b for a, b in zip(clip, frames))
    few = frames[:FRAME_LIST_MIN]
    assert media_list(few) == few  # up to FRAME_LIST_MIN: separate images
    one = pil(7)
    again = pil(7)  # another object, identical pixels
    assert media_list([one, again, pil(8), one]) == [one, media_list([pil(8)])[0]]
    assert len(media_list([one, again])) == 1 and media_list(one) == [one]
    assert len(media_list([one, one.convert("L")])) == 2  # same size, another mode: not the same image
    assert media_list([one, "x.mp4", one]) == [one, "x.mp4"]
    assert media_list(["x.mp4"] + frames) == ["x.mp4"] + frames  # mixed lists are never a clip


# ----------------------------------------------------------------------------- construction


def test_unknown_model_arg_lists_valid_keys(ckpt, files):
    with pytest.raises(ValueError, match=r"unknown model_args \['bogus', 'temperature'\]") as info:
        LlavaOVLmms(pretrained=str(ckpt), cache_dir=str(files["dir"]), bogus=1, temperature=0.5)
    for key in (
        "pretrained",
        "mode",
        "budget",
        "num_frames",
        "input_size",
        "image_max_side",
        "device",
        "dtype",
        "attn_implementation",
        "max_new_tokens",
        "cache",
        "cache_dir",
        "failures",
    ):
        assert key in str(info.value)
    with pytest.raises(ValueError, match="cannot load"):
        LlavaOVLmms(pretrained=str(files["dir"] / "no_ckpt_here"), cache=False)


def test_model_args_override_codec(ckpt):
    lm2 = LlavaOVLmms(pretrained=str(ckpt), mode="collage", num_frames="3", cache="false", max_new_tokens="5")
    codec = lm2.engine.processor.codec
    assert codec.mode == "collage" and codec.num_frames == 3 and codec.decode.input_size == 28
    assert lm2.engine.processor.cache is None and lm2.max_new_tokens == 5 and lm2.batch_size == 1


# ----------------------------------------------------------------------------- generate_until


def test_generate_until_groups_and_skips(lm, files):
    img = pil(3, (42, 28))
    docs = [
        {"visuals": [files["video"]]},
        {"visuals": [img, img]},
        {"visuals": None},
        {"visuals": [files["missing"]]},
        {"visuals": [files["image"]]},
    ]
    lm.task_dict = {TASK: {SPLIT: docs}}
    short, longer = {"max_new_tokens": 3}, {"max_new_tokens": 7, "until": ["\n\n"], "do_sample": False}
    kwargs = [short, longer, short, longer, longer]
    questions = ["What happens?", "What is this?", "How many apples?", "Gone?", "Describe."]
    reqs = [
        instance("generate_until", (q, dict(k), doc_to_visual, i, TASK, SPLIT), i)
        for i, (q, k) in enumerate(zip(questions, kwargs))
    ]
    before = lm.skipped
    answers = lm.generate_until(reqs)
    assert lm.skipped == before + 1 and answers[3] == ""
    for i in (0, 1, 2, 4):
        media = media_list(docs[i]["visuals"])
        gen = GenerationConfig.from_kwargs(kwargs[i], lm.max_new_tokens)
        assert answers[i] == lm.engine.generate([(questions[i], media)], gen)[0], i
    assert all(answers[i] for i in (0, 1, 2, 4)) and answers[0] != answers[1]


# ----------------------------------------------------------------------------- multi-round


def test_generate_until_multi_round(lm, files):
    img = pil(5, (42, 28))
    calls: list[dict] = []
    returned: dict = {}

    def doc_to_text(
        doc, lmms_eval_specific_kwargs=None, previous_output=None, round_idx=None, previous_round_info=None
    ):
        calls.append(
            {
                "doc": doc["name"],
                "previous_output": list(previous_output or []),
                "round_idx": round_idx,
                "info": previous_round_info,
                "kwargs": lmms_eval_specific_kwargs,
            }
        )
        if round_idx is None or round_idx == 0:
            return doc["question"]
        if round_idx == 1:  # a follow-up with a new image
            return [img], f"And now? You said: {previous_output[-1]}", False, previous_output, {"round": 1}
        returned["results"] = list(previous_output)  # terminal: the answers of both rounds
        return None, None, True, returned["results"], None

    docs = [
        {"name": "other", "visuals": [], "question": "unused"},
        {"name": "mr", "visuals": [files["video"]], "question": "What moves?"},
    ]
    lm.task_dict = {TASK: {SPLIT: docs}}
    dtt = functools.partial(doc_to_text, lmms_eval_specific_kwargs={"pre": ""})
    req = instance(
        "generate_until_multi_round",
        ("What moves?", {"max_new_tokens": 5, "until": ["nothing"]}, doc_to_visual, dtt, 1, TASK, SPLIT),
        1,
    )
    [result] = lm.generate_until_multi_round([req])

    assert result is returned["results"] and len(result) == 2 and all(result)
    assert [c["round_idx"] for c in calls] == [1, 2] and {c["doc"] for c in calls} == {"mr"}
    first, second = result
    assert calls[0]["previous_output"] == [first]  # round 1 was asked after seeing the first answer
    assert calls[1]["previous_output"] == [first, second] and calls[1]["info"] == {"round": 1}
    assert calls[0]["info"] is None and calls[0]["kwargs"] == {"pre": ""}
    # the rounds are one conversation: round 2 answers the whole history, media of both rounds included
    gen = GenerationConfig(max_new_tokens=5)  # until is dropped between rounds
    eng = lm.engine
    assert first == eng.generate([("What moves?", [files["video"]])], gen)[0]
    history = [
        {"from": "human", "value": "<video>\nWhat moves?"},
        {"from": "gpt", "value": first},
        {"from": "human", "value": f"<image>\nAnd now? You said: {first}"},
    ]
    assert second == eng.generate([(history, [files["video"], img])], gen)[0]
    assert second != eng.generate([(f"And now? You said: {first}", [img])], gen)[0]  # the history mattered


def test_multi_round_unreadable_media_is_skipped(lm, files):
    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        raise AssertionError("no further round after a media failure")

    lm.task_dict = {TASK: {SPLIT: [{"visuals": [files["missing"]]}]}}
    before = lm.skipped
    req = instance("generate_until_multi_round", ("Q?", {}, doc_to_visual, doc_to_text, 0, TASK, SPLIT), 0)
    assert lm.generate_until_multi_round([req]) == [[""]]
    assert lm.skipped == before + 1


# ----------------------------------------------------------------------------- loglikelihood


def test_loglikelihood_generation_results(lm, files):
    docs = [{"visuals": [files["video"]]}, {"visuals": [files["image"]]}, {"visuals": [files["missing"]]}]
    lm.task_dict = {TASK: {SPLIT: docs}}
    context = "Which one is it?"
    options = [" A red cat", " 3 apples", " The dog runs", " quick brown fox"]
    reqs = [
        instance("loglikelihood", (context, opt, doc_to_visual, doc, TASK, SPLIT), doc)
        for doc in (0, 1)
        for opt in options
    ]
    reqs.append(instance("loglikelihood", (context, " A", doc_to_visual, 2, TASK, SPLIT), 2))
    before = lm.skipped
    cache = lm.engine.processor.cache
    lookups = cache.hits + cache.misses
    out = lm.loglikelihood(reqs)
    assert cache.hits + cache.misses - lookups == 2  # each doc's media read once, not once per choice
    assert len(out) == len(reqs) and all(isinstance(r, GenerationResult) for r in out)
    assert all(
        isinstance(r.text, tuple) and isinstance(r.text[0], float) and isinstance(r.text[1], bool)
        for r in out
    )
    assert out[-1].text == (float("inf"), False) and lm.skipped == before + 1
    for doc in (0, 1):
        mine = out[doc * len(options) : (doc + 1) * len(options)]
        media = media_list(docs[doc]["visuals"])
        ref = lm.engine.loglikelihood([(context, opt.lstrip(), media) for opt in options])
        for r, e in zip(mine, ref):
            assert r.text[0] == pytest.approx(-e.logprob, abs=1e-5) and r.text[1] == e.is_greedy
        losses = [r.text[0] for r in mine]
        assert int(np.argmin(losses)) == int(np.argmax([e.logprob for e in ref]))
        assert len(set(losses)) == len(losses)
    # the leading delimiter is dropped: " A red cat" scores exactly like "A red cat" (each scored alone:
    # a batch of other lengths changes the last float bits of a score)
    plain, spaced = (
        lm.loglikelihood([instance("loglikelihood", (context, opt, doc_to_visual, 0, TASK, SPLIT), 0)])
        for opt in ("A red cat", " A red cat")
    )
    assert plain[0].text == spaced[0].text and plain[0].text[0] == pytest.approx(out[0].text[0], abs=1e-5)


# ----------------------------------------------------------------------------- failed media, frame folders


def test_failed_media_are_recorded_and_frame_folders_are_clips(ckpt, files, tmp_path):
    import json
    import os

    log = tmp_path / "out" / "failures.jsonl"
    lm2 = LlavaOVLmms(pretrained=str(ckpt), cache="false", failures=str(log))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    empty = tmp_path / "episode"  # a folder that is not frames
    empty.mkdir()
    (empty / "subtitles.srt").write_text("1\n")
    frames = tmp_path / "frames_fps3_hq"  # MVBench episodic_reasoning's layout: a folder of frames
    frames.mkdir()
    for i in range(6):
        pil(20 + i).save(frames / f"{i:05d}.png")

    def listing(doc):  # like mvbench_frames_doc_to_visual: the task reads the folder itself
        return [Image.open(os.path.join(doc["dir"], f)) for f in sorted(os.listdir(doc["dir"]))]

    docs = [
        {"visuals": [files["missing"]]},
        {"visuals": [str(corrupt)]},
        {"visuals": [str(empty)]},
        {"visuals": [str(frames)]},
        {"dir": str(tmp_path / "no_such_folder")},
        {"visuals": [files["image"]]},
    ]
    lm2.task_dict = {TASK: {SPLIT: docs}}
    reqs = [
        instance(
            "generate_until",
            ("What happens?", {"max_new_tokens": 4}, listing if i == 4 else doc_to_visual, i, TASK, SPLIT),
            i,
        )
        for i in range(len(docs))
    ]
    answers = lm2.generate_until(reqs)
    assert answers[:3] == ["", "", ""] and answers[4] == "" and lm2.skipped == 4
    gen = GenerationConfig(max_new_tokens=4)
    assert answers[3] and answers[3] == lm2.engine.generate([("What happens?", [str(frames)])], gen)[0]
    assert answers[5] == lm2.engine.generate([("What happens?", [files["image"]])], gen)[0]
    sel = lm2.engine.processor.load_media(str(frames))[0]
    assert (
        sel.frame_ids.tolist() == [0, 5] and sel.meta["source"] == "frames"
    )  # sampled to the checkpoint's 2
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    expected = [
        (0, "missing", files["missing"]),
        (1, "undecodable", str(corrupt)),
        (2, "not frames", str(empty)),
        (4, "missing", str(tmp_path / "no_such_folder")),
    ]
    assert lines == [
        {"task": TASK, "split": SPLIT, "doc_id": d, "reason": r, "media": m} for d, r, m in expected
    ]
    # multiple choice: a failed doc is one line however many choices it has, each choice scores inf
    reqs = [
        instance("loglikelihood", ("Which?", opt, doc_to_visual, 0, TASK, SPLIT), 0)
        for opt in (" A", " B", " C")
    ]
    reqs.append(instance("loglikelihood", ("Which?", " A", doc_to_visual, 3, TASK, SPLIT), 3))
    out = lm2.loglikelihood(reqs)
    assert [r.text for r in out[:3]] == [(float("inf"), False)] * 3 and out[3].text[0] < float("inf")
    assert lm2.skipped == 7 and len(log.read_text().splitlines()) == 5
    assert json.loads(log.read_text().splitlines()[-1])["doc_id"] == 0
