"""The 16 benchmarks' unmodified lmms-eval task code on offline stand-ins (eval/standins.py), through
eval/run_all_16.sh, on a tiny random checkpoint: every task writes its primary metric and the summary has
16 rows; --check names a missing dataset and a missing media folder; a task with a missing video file
finishes with that sample counted as failed media, and the runner exits non-zero unless
--allow-failed-media. One checkpoint and one stand-in build are shared by the tests of this module.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from eval_support import EVAL_DIR, MVBENCH, STANDARD, VIDEO_MMMU, load_eval_module, tiny_export

pytest.importorskip("lmms_eval")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

RUN_ALL = EVAL_DIR / "run_all_16.sh"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_export(tmp_path_factory.mktemp("standin_ckpt") / "sft" / "final")


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standin_hf") / "hf"
    load_eval_module("standins").build_standins(root, rows=2)
    return root


def _env(hf: Path, cache: Path) -> dict:
    drop = ("OPENAI_API_KEY", "AZURE_API_KEY", "LLAVA_OV_MMBENCH_JUDGE")
    return {k: v for k, v in os.environ.items() if k not in drop} | {
        "HF_HOME": str(hf),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LLAVA_OV_CACHE": str(cache),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _run(ckpt: Path, hf: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(RUN_ALL), str(ckpt), "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=_env(hf, out.parent / "cache"),
        timeout=1500,
    )


def _csv(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as f:
        return {r["benchmark"]: r for r in csv.DictReader(f)}


def test_all_16_on_standins(ckpt, hf_home, tmp_path):
    summ = load_eval_module("summarize")
    benches = summ.load_benchmarks()
    out = tmp_path / "out"
    # mvbench_episodic_reasoning's clips are a frame folder: a clip like any other (no failed media)
    res = _run(ckpt, hf_home, out, "--limit", "2")
    msg = res.stdout[-6000:] + res.stderr[-3000:]
    assert res.returncode == 0, msg
    assert "FAILED" not in res.stdout.replace("MEDIA FAILED", ""), msg
    assert "running mmbench_en_dev_static" in res.stderr  # no judge configured: judge-free, said once
    for name in STANDARD:
        bench = benches[name]
        files = summ.results_paths(out / name)
        assert files, f"{name}: no results file\n{msg}"
        data = json.loads(files[-1].read_text())
        launched = bench.judge_free if bench.judge_free else name
        subtasks = MVBENCH if name == "mvbench" else VIDEO_MMMU if name == "video_mmmu" else [launched]
        for task in subtasks:
            assert bench.metric in data["results"][task], f"{task}: {sorted(data['results'][task])}"
            assert data["n-samples"][task]["effective"] == 2
    rows = _csv(out)
    standard = [r for r in rows.values() if r["section"] == "benchmarks"]
    assert [r["benchmark"] for r in standard] == STANDARD
    assert all(r["score"] != "" for r in standard), rows
    assert "judge-free" in rows["mmbench_en_dev"]["note"] and "mmbench_en_dev_static" not in rows
    assert rows["mvbench"]["samples"] == str(2 * len(MVBENCH)) and rows["video_mmmu"]["samples"] == "6"
    assert all(r["failed_media"] == "0" for r in standard), {
        r["benchmark"]: r["failed_media"] for r in standard
    }
    assert "failed media" in (out / "summary.md").read_text().splitlines()[0]
    # the submission file mmbench writes (needs openpyxl) is there and is not taken for a results file
    assert list((out / "mmbench_en_dev").rglob("submissions/*.xlsx"))


def test_check_names_missing_dataset_and_media_folder(ckpt, tmp_path):
    hf = tmp_path / "hf"
    load_eval_module("standins").build_standins(hf, ["videomme", "mlvu_dev", "perceptiontest_val_mc"])
    shutil.rmtree(hf / "mlvu")  # the media folder lmms-eval expects: $HF_HOME/mlvu
    (hf / "perceptiontest_val" / "videos" / "video_1.mp4").unlink()  # its utils would sys.exit on it
    res = _run(
        ckpt, hf, tmp_path / "out", "--check", "--tasks", "ai2d,videomme,mlvu_dev,perceptiontest_val_mc"
    )
    assert res.returncode == 1, res.stdout + res.stderr
    lines = {line.split()[0]: line for line in res.stdout.splitlines()[1:]}
    assert "dataset missing" in lines["ai2d"] and str(hf / "datasets") in lines["ai2d"]
    assert lines["videomme"].split()[1] == "ok"
    assert "media folder missing" in lines["mlvu_dev"] and str(hf / "mlvu") in lines["mlvu_dev"]
    assert "media missing" in lines["perceptiontest_val_mc"]
    assert str(hf / "perceptiontest_val" / "videos" / "video_1.mp4") in lines["perceptiontest_val_mc"]
    assert not (tmp_path / "out").exists()  # --check launches nothing and writes nothing


def test_missing_video_is_counted_and_fails_the_run(ckpt, tmp_path):
    hf = tmp_path / "hf"
    load_eval_module("standins").build_standins(hf, ["longvideobench_val_v", "mlvu_dev"])
    gone = hf / "datasets" / "longvideobench" / "videos" / "standin_1.mp4"
    gone.unlink()  # longvideobench's utils pass the path on: the plugin answers empty and counts it
    (hf / "mlvu" / "standin_0.mp4").unlink()  # mlvu's utils would sys.exit: skipped by the preflight
    out = tmp_path / "out"
    res = _run(ckpt, hf, out, "--tasks", "longvideobench_val_v", "--limit", "2")
    msg = res.stdout + res.stderr
    assert res.returncode == 3, msg
    assert "MEDIA FAILED longvideobench_val_v: 1 sample(s)" in res.stdout, msg
    records = [
        json.loads(x) for x in (out / "longvideobench_val_v" / "failed_media.jsonl").read_text().splitlines()
    ]
    assert [(r["task"], r["doc_id"], r["media"]) for r in records] == [("longvideobench_val_v", 1, str(gone))]
    row = _csv(out)["longvideobench_val_v"]
    assert row["failed_media"] == "1" and "FAILED MEDIA" in row["note"]
    assert "longvideobench_val_v (!)" in (out / "summary.md").read_text()

    res = _run(
        ckpt, hf, out, "--tasks", "longvideobench_val_v,mlvu_dev", "--limit", "2", "--allow-failed-media"
    )
    msg = res.stdout + res.stderr
    assert res.returncode == 1, msg  # mlvu_dev was not launched: a failed task
    failed = [line for line in res.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1 and failed[0].startswith(
        "FAILED mlvu_dev: preflight: 1 of 2 document(s) lack media"
    )
    assert (
        str(hf / "mlvu" / "standin_0.mp4") in failed[0] and not (out / "mlvu_dev" / "lmms_eval.log").exists()
    )

    res = _run(ckpt, hf, out, "--tasks", "longvideobench_val_v", "--limit", "2", "--allow-failed-media")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (
        "1 sample(s) with failed media in longvideobench_val_v (allowed by --allow-failed-media)"
        in res.stdout
    )
