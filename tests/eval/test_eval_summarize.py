"""eval/summarize.py on synthetic lmms-eval results files with the real layout."""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from eval_support import MVBENCH, STANDARD, VIDEO_MMMU, load_eval_module, write_results

summ = load_eval_module("summarize")

# task: (results entry, n-samples); 0-1 tasks and 0-100 tasks as each really writes them
PLAIN = {
    "ai2d": (
        {"exact_match,flexible-extract": 0.8123, "exact_match_stderr,flexible-extract": 0.007},
        (3088, 3088),
    ),
    "chartqa": (
        {"relaxed_overall,none": 0.755, "relaxed_human_split,none": 0.6, "relaxed_augmented_split,none": 0.9},
        (2500, 2500),
    ),
    "docvqa_val": ({"anls,none": 0.9}, (5349, 100)),  # run with --limit 100
    "infovqa_val": ({"anls,none": 0.6}, (2801, 2801)),
    "ocrbench": ({"ocrbench_accuracy,none": 0.612}, (1000,)),  # no 'effective' -> 'original'
    "mmbench_en_dev": ({"gpt_eval_score,none": 80.5, "submission,none": []}, (4329, 4329)),
    "mmstar": ({"average,none": 0.55, "math,none": 0.4}, (1500, 1500)),
    "realworldqa": ({"exact_match,none": 0.65}, (765, 765)),
    "videomme": ({"videomme_perception_score,none": 58.0}, (2700, 2700)),
    "nextqa_mc_test": ({"exact_match,none": 0.8}, (8564, 8564)),
    "perceptiontest_val_mc": ({"accuracy,none": 0.57}, (19140, 19140)),
    "temporalbench_long_qa": (
        {"temporalbench_score,none": [60.0, 22.5], "temporalbench_score_stderr,none": "N/A"},
        (1000, 1000),
    ),
    "mlvu_dev": ({"mlvu_percetion_score,none": 63.4}, (2174, 2174)),
    "longvideobench_val_v": ({"lvb_acc,none": 0.56}, (1337, 1337)),
    # not one of the 16: reported as local, not averaged
    "llava_ov_shapes": ({"accuracy,none": 0.25}, (64, 64)),
    # unknown to benchmarks.yaml: ignored with a note
    "some_other_task": ({"accuracy,none": 0.1}, (10, 10)),
}
EXPECTED = {  # 0-100 scores
    "ai2d": 81.23,
    "chartqa": 75.5,
    "docvqa_val": 90.0,
    "infovqa_val": 60.0,
    "ocrbench": 61.2,
    "mmbench_en_dev": 80.5,
    "mmstar": 55.0,
    "realworldqa": 65.0,
    "videomme": 58.0,
    "mvbench": 49.5,
    "nextqa_mc_test": 80.0,
    "perceptiontest_val_mc": 57.0,
    "temporalbench_long_qa": 22.5,
    "video_mmmu": 50.0,
    "mlvu_dev": 63.4,
    "longvideobench_val_v": 56.0,
}
IMAGE = STANDARD[:8]
VIDEO = STANDARD[8:]


def write_all_16(path, **kw):
    groups = {
        "mvbench": {
            s: {"mvbench_accuracy,none": 40.0 + i, "mvbench_accuracy_stderr,none": "N/A"}
            for i, s in enumerate(MVBENCH)
        },
        "video_mmmu": {s: {"mmmu_acc,none": v} for s, v in zip(VIDEO_MMMU, (0.4, 0.5, 0.6))},
    }
    n_samples = {t: n for t, (_, n) in PLAIN.items()}
    n_samples.update({s: (200, 200) for s in MVBENCH})
    n_samples.update({s: (300, 300) for s in VIDEO_MMMU})
    return write_results(path, {t: e for t, (e, _) in PLAIN.items()}, groups, n_samples, **kw)


def test_benchmarks_yaml_lists_the_16_then_local():
    benches = summ.load_benchmarks()
    standard = [n for n, b in benches.items() if b.section == "benchmarks"]
    assert standard == STANDARD
    assert [n for n, b in benches.items() if b.section == "local"] == [
        "llava_ov_motion_qa",
        "llava_ov_shapes",
        "llava_ov_shapes_mc",
    ]
    assert [n for n in standard if benches[n].kind == "image"] == IMAGE
    assert list(benches["mvbench"].subtasks) == MVBENCH
    assert list(benches["video_mmmu"].subtasks) == VIDEO_MMMU
    assert benches["temporalbench_long_qa"].index == 1
    assert benches["videomme"].requires == {"cv2": "opencv-python-headless"}
    assert benches["longvideobench_val_v"].requires == {"decord": "decord"}
    assert benches["mmbench_en_dev"].caveat
    assert benches["llava_ov_shapes_mc"].metric == "acc,none"


def test_summary_of_all_16(tmp_path):
    write_all_16(tmp_path / "all" / "sft__final" / "20260101_120000_results.json")
    s = summ.summarize(tmp_path)
    standard = [r for r in s.rows if r.section == "benchmarks"]
    assert [r.name for r in standard] == STANDARD
    for row in standard:
        assert row.score == pytest.approx(EXPECTED[row.name]), row.name
    mv, vm = s.row("mvbench"), s.row("video_mmmu")
    assert (mv.samples, mv.count) == (4000, 20) and (vm.samples, vm.count) == (900, 3)
    assert s.row("ai2d").samples == 3088
    assert s.row("docvqa_val").samples == 100  # 'effective' (--limit) wins over 'original'
    assert s.row("ocrbench").samples == 1000
    local = s.row("llava_ov_shapes")
    assert local.section == "local" and local.score == pytest.approx(25.0)
    assert s.row("some_other_task") is None
    assert any("some_other_task" in n and "ignored" in n for n in s.notes)
    assert not any(s_ in n for n in s.notes for s_ in MVBENCH)  # subtasks of known groups are not "unknown"

    avg = {a.name: a for a in s.averages}
    video_mean = sum(EXPECTED[t] for t in VIDEO) / 8
    image_mean = sum(EXPECTED[t] for t in IMAGE) / 8
    assert video_mean == pytest.approx(54.55) and image_mean == pytest.approx(71.05375)
    assert avg["video average"].score == pytest.approx(54.55) and avg["video average"].count == 8
    assert avg["image/document average"].score == pytest.approx(71.05375)
    assert avg["image/document average"].count == 8
    assert avg["overall average"].score == pytest.approx(62.801875) and avg["overall average"].count == 16
    assert avg["overall average"].samples == sum(r.samples for r in standard)

    assert summ.main([str(tmp_path)]) == 0
    md = (tmp_path / "summary.md").read_text()
    assert "| ai2d " in md and "81.23" in md and "49.50" in md and "22.50" in md
    assert "overall average (16 benchmarks)" in md and "62.80" in md
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = {r["benchmark"]: r for r in csv.DictReader(f)}
    assert float(rows["mvbench"]["score"]) == pytest.approx(49.5) and rows["mvbench"]["samples"] == "4000"
    assert float(rows["temporalbench_long_qa"]["score"]) == pytest.approx(22.5)
    assert rows["overall average"]["section"] == "average" and rows["overall average"]["count"] == "16"
    assert float(rows["video average"]["score"]) == pytest.approx(54.55)


def test_custom_output_paths_and_empty_dir(tmp_path, capsys):
    write_all_16(tmp_path / "r" / "20260101_120000_results.json")
    md, csv_path = tmp_path / "x" / "t.md", tmp_path / "y" / "t.csv"
    assert summ.main([str(tmp_path / "r"), "--md", str(md), "--csv", str(csv_path)]) == 0
    assert md.exists() and csv_path.exists()
    assert "mvbench" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert summ.main([str(tmp_path / "empty")]) == 1
    assert summ.main([str(tmp_path / "missing")]) == 2


def test_newest_results_per_task(tmp_path):
    # old file: ai2d and chartqa; new file: ai2d only -> ai2d from the new one, chartqa from the old
    old = write_results(
        tmp_path / "a" / "m" / "20260101_100000_results.json",
        {"ai2d": {"exact_match,flexible-extract": 0.5}, "chartqa": {"relaxed_overall,none": 0.3}},
        n_samples={"ai2d": (10, 10), "chartqa": (20, 20)},
        date="20260101_100000",
        mtime=1_000_000,
    )
    write_results(
        tmp_path / "b" / "m" / "20260102_100000_results.json",
        {"ai2d": {"exact_match,flexible-extract": 0.7}},
        n_samples={"ai2d": (10, 5)},
        date="20260102_100000",
        mtime=2_000_000,
    )
    s = summ.summarize(tmp_path)
    assert s.row("ai2d").score == pytest.approx(70.0) and s.row("ai2d").samples == 5
    assert s.row("ai2d").source.startswith("b")
    assert s.row("chartqa").score == pytest.approx(30.0)
    # the date field decides before the file time (copied folders lose file times)
    old.touch()
    assert summ.summarize(tmp_path).row("ai2d").score == pytest.approx(70.0)


def test_partial_group_and_bad_values(tmp_path):
    write_results(
        tmp_path / "r_results.json",
        {"temporalbench_long_qa": {"temporalbench_score,none": "N/A"}},
        groups={"video_mmmu": {"video_mmmu_adaptation": {"mmmu_acc,none": 0.3}}},
        n_samples={"video_mmmu_adaptation": (100, 100)},
    )
    s = summ.summarize(tmp_path)
    vm = s.row("video_mmmu")
    assert vm.score == pytest.approx(30.0) and vm.count == 1 and "differ from benchmarks.yaml" in vm.note
    tb = s.row("temporalbench_long_qa")
    assert tb.score is None and "not a number" in tb.note
    assert {a.name: a.count for a in s.averages}["video average"] == 1


def test_group_subtasks_missing_from_json_falls_back_to_yaml(tmp_path):
    subs = {s: {"mmmu_acc,none": 0.9} for s in VIDEO_MMMU[:2]}
    path = write_results(tmp_path / "r_results.json", {}, groups={"video_mmmu": subs})
    data = path.read_text().replace('"video_mmmu": [', '"unused": [')
    path.write_text(data)
    vm = summ.summarize(tmp_path).row("video_mmmu")
    assert vm.score == pytest.approx(90.0) and "only 2 of 3 subtasks" in vm.note


def test_benchmarks_yaml_matches_installed_lmms_eval():
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None:
        pytest.skip("lmms-eval is not installed")
    tasks_root = Path(spec.origin).parent / "tasks"
    defined = {}  # task/group name -> its YAML file
    for path in tasks_root.rglob("*.yaml"):
        for m in re.finditer(
            r"^(?:task|group):\s*[\"']?([\w.-]+)[\"']?\s*$", path.read_text(errors="replace"), re.M
        ):
            defined.setdefault(m.group(1), path)
    for name, bench in summ.load_benchmarks().items():
        if bench.section != "benchmarks":
            continue
        assert name in defined, name
        if bench.is_group:
            group_yaml = yaml.safe_load(defined[name].read_text())
            assert group_yaml["task"] == list(bench.subtasks), name
        folder = defined[bench.subtasks[0] if bench.is_group else name].parent
        text = "\n".join(p.read_text(errors="replace") for p in folder.iterdir() if "yaml" in p.name)
        metric, filt = bench.metric.split(",")
        assert f"metric: {metric}" in text, bench.metric
        assert filt == "none" or f'name: "{filt}"' in text, bench.metric
