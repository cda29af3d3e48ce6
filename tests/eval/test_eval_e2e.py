"""The real runner with lmms-eval's built-in `dummy` model: one task cannot load its data, one can.

ai2d needs the hub, so with HF_HUB_OFFLINE=1 and an empty HF_HOME it fails (lmms-eval still exits 0);
the other task is a tiny text-only generate_until task over a local JSON file in the test's include
path. The runner must report ai2d as FAILED, still run the other task, summarize it and exit 1.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest
import yaml
from eval_support import EVAL_DIR, load_eval_module

pytestmark = pytest.mark.slow

TASK_YAML = """\
task: toy_text_qa_e2e
dataset_path: json
dataset_kwargs:
  data_files:
    test: toy.json
test_split: test
output_type: generate_until
doc_to_visual: !function toy_utils.doc_to_visual
doc_to_text: !function toy_utils.doc_to_text
doc_to_target: answer
process_results: !function toy_utils.process_results
generation_kwargs:
  max_new_tokens: 4
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
"""
TASK_UTILS = """\
def doc_to_visual(doc):
    return []


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"accuracy": float(results[0].strip() == doc["answer"])}
"""


def test_one_task_fails_alone(tmp_path):
    pytest.importorskip("lmms_eval")
    summ = load_eval_module("summarize")
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "toy.yaml").write_text(TASK_YAML)
    (tasks_dir / "toy_utils.py").write_text(TASK_UTILS)
    # the dummy model answers "A": 3 of the 4 questions are right
    docs = [{"question": f"question {i}?", "answer": a} for i, a in enumerate("AABA")]
    (tasks_dir / "toy.json").write_text(json.dumps(docs))
    ai2d = summ.load_benchmarks()["ai2d"]
    bench_file = tmp_path / "benchmarks.yaml"
    bench_file.write_text(
        yaml.safe_dump(
            {
                "benchmarks": [
                    {"name": "ai2d", "kind": ai2d.kind, "metric": ai2d.metric, "scale": int(ai2d.scale)},
                    {"name": "toy_text_qa_e2e", "kind": "image", "metric": "accuracy,none", "scale": 1},
                ]
            }
        )
    )
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    out = tmp_path / "out"
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    res = subprocess.run(
        [
            "bash",
            str(EVAL_DIR / "run_all_16.sh"),
            str(ckpt),
            "--model",
            "dummy",
            "--tasks",
            "ai2d,toy_text_qa_e2e",
            "--include-path",
            str(tasks_dir),
            "--out",
            str(out),
            "--benchmarks",
            str(bench_file),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    msg = res.stdout + res.stderr
    assert res.returncode == 1, msg
    failed = [line for line in res.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1 and failed[0].startswith("FAILED ai2d: "), msg
    # the preflight finds it before any launch: one line, ai2d is not started
    assert failed[0].startswith("FAILED ai2d: preflight: ") and "is not in the HF cache" in failed[0]
    assert str(tmp_path / "hf" / "datasets") in failed[0] and not (out / "ai2d" / "lmms_eval.log").exists()
    assert "toy_text_qa_e2e" in res.stdout and "1 of 2 task(s) failed: ai2d" in res.stdout
    assert list((out / "toy_text_qa_e2e").rglob("*_results.json")), msg
    with open(out / "summary.csv", newline="") as f:
        rows = {r["benchmark"]: r for r in csv.DictReader(f)}
    assert "ai2d" not in rows
    assert float(rows["toy_text_qa_e2e"]["score"]) == pytest.approx(75.0)
    assert rows["toy_text_qa_e2e"]["samples"] == "4"
    assert float(rows["overall average"]["score"]) == pytest.approx(75.0)
