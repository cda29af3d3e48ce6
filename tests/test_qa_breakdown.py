"""``benchmarks/qa_breakdown.py``: a run's held-out answers split by scene case and answer, rebuilt from its
config alone; a folder that is not a run is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from llava_ov.data.mixture import synthetic_config
from llava_ov.data.synthetic_qa import make_record, scene_case
from llava_ov.train.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "qa_breakdown.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_breakdown_counts_each_case_and_answer(tmp_path):
    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    small = {"synthetic": {"num_heldout": 25}}
    (run / "config.yaml").write_text(
        yaml.safe_dump({"data_config": "data_configs/synthetic_motion_qa.yaml", "data": small})
    )
    synthetic = synthetic_config(load_train_config(run / "config.yaml").stage_data("sft"))
    records, expected = [], {}
    for index in range(25):
        record, _ = make_record(synthetic, "heldout", index)
        correct = scene_case(record) != "pair, both still"  # a model that cannot bind shapes
        records.append(
            {"id": record["id"], "qtype": record["qtype"], "answer": record["answer"], "correct": correct}
        )
        key = (record["qtype"], scene_case(record))
        expected[key] = expected.get(key, 0) + 1
    assert ("color", "pair, both still") in expected  # the held-out draw has the case the model misses
    (run / "sft" / "eval.json").write_text(json.dumps({"records": records}))

    proc = _run(run)
    assert proc.returncode == 0, proc.stderr
    seen = {}
    for cells in (line.split() for line in proc.stdout.splitlines()):
        if cells[1:2] == ["case"]:
            seen[cells[0], " ".join(cells[2:-2])] = (int(cells[-2]), float(cells[-1]))
    assert {k: n for k, (n, _) in seen.items()} == expected
    assert all(acc == (0.0 if case == "pair, both still" else 1.0) for (_, case), (_, acc) in seen.items())
    answers = [line for line in proc.stdout.splitlines() if line.split()[1:2] == ["answer"]]
    assert len(answers) == len({(r["qtype"], r["answer"]) for r in records})


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "eval.json" in lines[0], proc.stderr
