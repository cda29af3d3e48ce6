"""Real lmms-eval runs of our plugin on a tiny checkpoint trained here (no mocks of lmms-eval).

One run of ``eval/run_all_16.sh`` over the three offline local tasks and ``ai2d`` (no data offline):
ai2d fails alone and the script exits 1; the local tasks write results with the expected keys and
sample counts; one held-out clip's file is missing, so its answer is empty, one warning names it and
the task still finishes; the other motion-QA answers equal the trainer's own held-out answers. A
second run finds every selection in the patch cache. Two processes split the requests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
RUN_ALL = REPO / "eval" / "run_all_16.sh"
LIMIT = 12
MISSING = 3  # doc whose video file is deleted
LOCAL = ["llava_ov_motion_qa", "llava_ov_shapes", "llava_ov_shapes_mc"]


def _train_support():
    spec = importlib.util.spec_from_file_location(
        "llava_ov_train_support", REPO / "tests" / "support" / "train_support.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(checkpoint, trainer's held-out records, include path, --local-data, env)."""
    from llava_ov.train.trainer import train

    support = _train_support()
    root = tmp_path_factory.mktemp("plugin")
    data_root = root / "synthetic"
    # enough steps for non-trivial answers; max_new_tokens as in the task YAML
    cfg = support.tiny_config(
        root / "run", data_root, **{"sft.max_steps": 120, "eval.max_new_tokens": 3, "log.every": 60}
    )
    train(cfg)
    records = json.loads((root / "run" / "sft" / "eval.json").read_text())["records"]
    include = root / "tasks"
    shutil.copytree(
        REPO / "eval" / "tasks" / "llava_ov",
        include / "llava_ov",
        ignore=shutil.ignore_patterns("data", "__pycache__"),
    )
    local_data = (
        f"data.synthetic.out_dir={data_root} data.synthetic.num_train=48 "
        "data.synthetic.num_heldout=20 data.synthetic.workers=1"
    )
    prep = subprocess.run(
        [
            sys.executable,
            str(REPO / "eval" / "prepare_local_tasks.py"),
            "--tasks-dir",
            str(include),
            *local_data.split(),
        ],
        capture_output=True,
        text=True,
    )
    assert prep.returncode == 0, prep.stderr
    docs = [
        json.loads(x)
        for x in (include / "llava_ov" / "data" / "motion_qa" / "test.jsonl").read_text().splitlines()
    ]
    (include / "llava_ov" / "data" / "motion_qa" / docs[MISSING]["media"]).unlink()
    env = os.environ | {
        "HF_HOME": str(root / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LLAVA_OV_CACHE": str(root / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    return root / "run" / "sft" / "final", records, docs, include, local_data, env


def _run_all(setup, out: Path, tasks: list[str], *extra: str) -> subprocess.CompletedProcess:
    ckpt, _, _, include, local_data, env = setup
    cmd = [
        "bash",
        str(RUN_ALL),
        str(ckpt),
        "--tasks",
        ",".join(tasks),
        "--limit",
        str(LIMIT),
        "--out",
        str(out),
        "--include-path",
        str(include),
        "--local-data",
        local_data,
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def _results(out: Path, task: str) -> dict:
    files = sorted((out / task).rglob("*_results.json"))
    assert files, f"no results for {task}"
    return json.loads(files[-1].read_text())


def _samples(out: Path, task: str) -> list[dict]:
    files = sorted((out / task).rglob(f"*_samples_{task}.jsonl"))
    assert files, f"no samples for {task}"
    return sorted(
        (json.loads(line) for line in files[-1].read_text().splitlines()), key=lambda s: s["doc_id"]
    )


def _cache_entries(setup) -> list[Path]:
    return sorted((Path(setup[5]["LLAVA_OV_CACHE"]) / "patch_cache").rglob("*.npz"))


@pytest.fixture(scope="module")
def first_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    return out, _run_all(setup, out, [*LOCAL, "ai2d"])


def test_entry_point_resolves_our_model():
    from importlib.metadata import entry_points

    from lmms_eval.models import get_model, list_available_models

    from llava_ov.lmms_eval_plugin.model import LlavaOVLmms

    assert [ep.value for ep in entry_points(group="lmms_eval.models") if ep.name == "llava_ov"] == [
        "llava_ov.lmms_eval_plugin:manifest"
    ]
    assert "llava_ov" in list_available_models()
    assert get_model("llava_ov") is LlavaOVLmms


def test_local_tasks_run_and_a_task_without_data_fails_alone(first_run):
    out, res = first_run
    assert res.returncode == 1, res.stdout + res.stderr
    failed = [line for line in res.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith("FAILED ai2d:") and "HF cache" in failed[0], res.stdout
    assert "1 of 4 task(s) failed: ai2d" in res.stdout
    expected = {
        "llava_ov_motion_qa": "accuracy,none",
        "llava_ov_shapes": "accuracy,none",
        "llava_ov_shapes_mc": "acc,none",
    }
    for task, key in expected.items():
        results = _results(out, task)
        assert 0.0 <= results["results"][task][key] <= 1.0
        assert results["n-samples"][task]["effective"] == LIMIT
        assert len(_samples(out, task)) == LIMIT
    summary = (out / "summary.md").read_text()
    assert all(f"{task} (local)" in summary for task in expected) and "ai2d" not in summary


def test_motion_qa_answers_equal_the_trainers(setup, first_run):
    from llava_ov.train.evaluate import normalize_answer

    out, _ = first_run
    _, records, docs, _, _, _ = setup
    samples = _samples(out, "llava_ov_motion_qa")
    assert [s["doc_id"] for s in samples] == list(range(LIMIT))
    trainer = {r["id"]: r["prediction"] for r in records}
    ours = {docs[s["doc_id"]]["id"]: normalize_answer(s["filtered_resps"], one_word=True) for s in samples}
    missing = docs[MISSING]["id"]
    assert ours.pop(missing) == ""
    assert ours == {k: trainer[k] for k in ours}
    assert len(set(ours.values())) >= 1 and any(ours.values())  # non-trivial answers were compared
    correct = [s["accuracy"] for s in samples if s["doc_id"] != MISSING]
    assert correct == [
        float(ours[docs[s["doc_id"]]["id"]] == normalize_answer(docs[s["doc_id"]]["answer"]))
        for s in samples
        if s["doc_id"] != MISSING
    ]


def test_missing_video_is_logged_and_counted(setup, first_run):
    out, _ = first_run
    _, _, docs, _, _, _ = setup
    log = (out / "llava_ov_motion_qa" / "lmms_eval.log").read_text()
    name = Path(docs[MISSING]["media"]).name
    warnings = [line for line in log.splitlines() if "unreadable media" in line and "WARNING" in line]
    assert len(warnings) == 1 and name in warnings[0] and "file not found" in warnings[0]
    assert f"{LIMIT} requests, 1 with unreadable media" in log


def test_second_run_hits_the_patch_cache(setup, first_run, tmp_path):
    entries = _cache_entries(setup)
    assert len(entries) == 2 * LIMIT - 1  # 11 clips + 12 stills (the shapes tasks share their images)
    res = _run_all(setup, tmp_path / "again", ["llava_ov_motion_qa"])
    assert res.returncode == 3, res.stdout + res.stderr  # the deleted clip is failed media: exit 3
    log = (tmp_path / "again" / "llava_ov_motion_qa" / "lmms_eval.log").read_text()
    assert f"patch cache {LIMIT - 1} hits / 0 misses" in log
    assert _cache_entries(setup) == entries


def test_two_processes_split_the_requests(setup, first_run, tmp_path):
    out, _ = first_run
    res = _run_all(
        setup, tmp_path / "two", ["llava_ov_motion_qa"], "--num-processes", "2", "--allow-failed-media"
    )
    assert res.returncode == 0, res.stdout + res.stderr  # the deleted clip is failed media, allowed here
    log = (tmp_path / "two" / "llava_ov_motion_qa" / "lmms_eval.log").read_text()
    assert "rank 0/2" in log and "rank 1/2" in log
    assert log.count(f"{LIMIT // 2} requests") == 2  # each rank answered half
    two = [s["filtered_resps"] for s in _samples(tmp_path / "two", "llava_ov_motion_qa")]
    assert two == [s["filtered_resps"] for s in _samples(out, "llava_ov_motion_qa")]
