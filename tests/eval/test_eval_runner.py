"""eval/run_all.py and eval/run_all_16.sh: dry runs, argument errors, failure detection (no lmms-eval run)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest
from eval_support import EVAL_DIR, MVBENCH, STANDARD, VIDEO_MMMU, load_eval_module, write_results

run_all = load_eval_module("run_all")
summ = load_eval_module("summarize")
WRAPPER = EVAL_DIR / "run_all_16.sh"
JUDGE = "LLAVA_OV_MMBENCH_JUDGE"


def export(path):
    """A folder that passes the runner's LMM-export check (llava_ov.json)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "llava_ov.json").write_text("{}")
    return path


def wrapper(*args, cwd, env=None):
    return subprocess.run(
        ["bash", str(WRAPPER), *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env, timeout=60
    )


def test_dry_run_lists_the_16_from_any_cwd(tmp_path):
    ckpt, out = export(tmp_path / "run" / "sft" / "final"), tmp_path / "out"
    res = wrapper(
        ckpt,
        "--dry-run",
        "--out",
        out,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", JUDGE)},
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 16
    for name, line in zip(STANDARD, lines):
        argv = shlex.split(line)
        assert argv[1:3] == ["-m", "lmms_eval"]
        # no judge configured: mmbench_en_dev runs as its rule-based variant, into its own folder
        launched = "mmbench_en_dev_static" if name == "mmbench_en_dev" else name
        assert argv.count("--tasks") == 1 and argv[argv.index("--tasks") + 1] == launched
        assert argv[argv.index("--model") + 1] == "llava_ov"
        assert argv[argv.index("--model_args") + 1] == (
            f"pretrained={ckpt},failures={out / name / 'failed_media.jsonl'}"
        )
        assert argv[argv.index("--output_path") + 1] == str(out / name)
        assert argv[argv.index("--include_path") + 1] == str(EVAL_DIR / "tasks")
        assert argv[argv.index("--batch_size") + 1] == "1"
        assert "--log_samples" in argv and "--limit" not in argv
    assert res.stderr == ""


def test_dry_run_subset_with_options(capsys, tmp_path):
    rc = run_all.main(
        [
            str(tmp_path),
            "--dry-run",
            "--tasks",
            "mvbench,ai2d",
            "--limit",
            "3",
            "--batch-size",
            "2",
            "--model",
            "dummy",
            "--model-args",
            "a=1,b=x",
            "--include-path",
            str(tmp_path / "t"),
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "--tasks mvbench " in lines[0] and "--tasks ai2d " in lines[1]
    for line in lines:
        argv = shlex.split(line)
        assert argv[argv.index("--limit") + 1] == "3" and argv[argv.index("--batch_size") + 1] == "2"
        assert argv[argv.index("--model") + 1] == "dummy"
        assert argv[argv.index("--model_args") + 1] == f"pretrained={tmp_path},a=1,b=x"
        assert argv[argv.index("--include_path") + 1] == str(tmp_path / "t")


def test_dry_run_local_task_prints_prepare_on_stderr(capsys, tmp_path):
    export(tmp_path)
    assert run_all.main([str(tmp_path), "--dry-run", "--tasks", "llava_ov_shapes,llava_ov_motion_qa"]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.splitlines()) == 2
    assert "prepare_local_tasks.py" in cap.err and "--tasks llava_ov_shapes,llava_ov_motion_qa" in cap.err


def test_only_our_local_tasks_are_prepared(capsys, tmp_path):
    """A local task of the user's (no `prepare: true`) runs as it is: no prepare step for it."""
    bench = tmp_path / "benchmarks.yaml"
    bench.write_text(
        (EVAL_DIR / "benchmarks.yaml").read_text()
        + ("  - name: my_local_task\n    kind: image\n    metric: accuracy,none\n    scale: 1\n")
    )
    args = [str(export(tmp_path)), "--dry-run", "--benchmarks", str(bench)]
    assert run_all.main([*args, "--tasks", "my_local_task"]) == 0
    captured = capsys.readouterr()
    assert "prepare_local_tasks" not in captured.err and "--tasks my_local_task" in captured.out
    assert run_all.main([*args, "--tasks", "my_local_task,llava_ov_shapes"]) == 0
    err = capsys.readouterr().err
    assert "prepare_local_tasks" in err and "--tasks llava_ov_shapes" in err and "my_local_task" not in err


def test_unknown_task_and_missing_ckpt(tmp_path, capsys):
    export(tmp_path)
    assert run_all.main([str(tmp_path), "--dry-run", "--tasks", "ai2d,nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "ai2d" in err[0] and "llava_ov_shapes_mc" in err[0]
    missing = tmp_path / "no_such_ckpt"
    res = wrapper(missing, "--tasks", "ai2d", cwd=tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [f"error: checkpoint folder not found: {missing}"]


@pytest.mark.parametrize("dry_run", [True, False])
def test_not_an_lmm_export_fails_in_one_line(tmp_path, dry_run):
    """A folder without llava_ov.json fails before any task starts, also under --dry-run."""
    folder = tmp_path / "not_export"
    folder.mkdir()
    res = wrapper(
        folder, "--tasks", "ai2d", "--out", tmp_path / "o", *(["--dry-run"] if dry_run else []), cwd=tmp_path
    )
    assert res.returncode == 2 and res.stdout == ""
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {folder} is not an LMM export (no llava_ov.json)")
    assert not (tmp_path / "o").exists()


def test_usage_names_the_wrapper(tmp_path):
    res = wrapper("--bogus-flag", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("usage: bash eval/run_all_16.sh ")


def test_results_glob_ignores_submissions(tmp_path):
    """mmbench writes submissions/mmbench_en_dev_results.json (no 'results' mapping): not a results file."""
    bench = summ.load_benchmarks()["mmbench_en_dev"]
    start = time.time()
    real = write_results(
        tmp_path / "mmbench_en_dev" / "m" / "20260101_120000_results.json",
        {"mmbench_en_dev": {"gpt_eval_score,none": 50.0}},
    )
    sub = tmp_path / "mmbench_en_dev" / "submissions" / "mmbench_en_dev_results.json"
    sub.parent.mkdir(parents=True)
    sub.write_text(json.dumps({"overall_acc": 0.5, "category_acc": {}, "l2_category_acc": {}}))
    assert summ.results_paths(tmp_path) == [real]
    assert run_all.check_results(bench, tmp_path / "mmbench_en_dev", start) is None
    summary = summ.summarize(tmp_path)
    assert not summary.notes and summary.row("mmbench_en_dev").score == pytest.approx(50.0)


def test_judge_setting(monkeypatch):
    bench = summ.load_benchmarks()["mmbench_en_dev"]
    assert not run_all.judge_configured({})
    assert run_all.judge_configured({"OPENAI_API_KEY": "k"})
    assert not run_all.judge_configured({"OPENAI_API_KEY": "k", JUDGE: "none"})
    assert run_all.judge_configured({JUDGE: "openai"})
    assert not run_all.judge_configured({"API_TYPE": "azure", "OPENAI_API_KEY": "k"})
    with pytest.raises(ValueError, match=JUDGE):
        run_all.judge_configured({JUDGE: "maybe"})
    assert run_all.launch_name(bench, judge=False) == "mmbench_en_dev_static"
    assert run_all.launch_name(bench, judge=True) == "mmbench_en_dev"


def test_num_processes_launcher(capsys, tmp_path):
    """N > 1: accelerate launch on GPUs; on CPU torchrun with ACCELERATE_USE_CPU=1 (accelerate's --cpu
    launcher would start one process)."""
    import torch

    assert (
        run_all.main([str(export(tmp_path)), "--dry-run", "--tasks", "ai2d,chartqa", "--num-processes", "2"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        argv = shlex.split(line)
        if torch.cuda.is_available():
            assert "accelerate" in argv[0] and argv[1] == "launch"
            assert argv[argv.index("--num_processes") + 1] == "2"
            assert int(argv[argv.index("--main_process_port") + 1]) > 0
        else:
            assert argv[:2] == ["env", "ACCELERATE_USE_CPU=1"] and "torchrun" in argv[2]
            assert argv[argv.index("--nproc_per_node") + 1] == "2"
            assert int(argv[argv.index("--master_port") + 1]) > 0
        assert argv[argv.index("-m") + 1] == "lmms_eval" and "--tasks" in argv


def test_hf_home_is_absolute(tmp_path, monkeypatch):
    import os

    assert run_all.hf_home({}) == os.path.expanduser("~/.cache/huggingface")
    monkeypatch.chdir(tmp_path)
    assert run_all.hf_home({"HF_HOME": "rel/hf"}) == str(tmp_path / "rel" / "hf")


OFFLINE_LOG = """\x1b[32m2026-12-01 09:16:55\x1b[0m | \x1b[1mINFO    \x1b[0m | \
lmms_eval.evaluator:simple_evaluate:486 - Setting seed
Traceback (most recent call last):
  File "datasets/load.py", line 1125, in dataset_module_factory
    raise ConnectionError(f"Couldn't reach '{path}' on the Hub ({e.__class__.__name__})") from e
ConnectionError: Couldn't reach 'lmms-lab-encoder/ai2d' on the Hub (OfflineModeIsEnabled)
tenacity.RetryError: RetryError[<Future at 0x7f state=finished raised ConnectionError>]
2026-12-01 09:17:03 | ERROR    | lmms_eval.__main__:cli_evaluate:614 - \
Error during evaluation: RetryError[<Future>]. \
Please set `--verbosity=DEBUG` to get more information.
"""


def test_failure_reason():
    reason = run_all.failure_reason(OFFLINE_LOG, "/tmp/hf")
    assert reason == "dataset 'lmms-lab-encoder/ai2d' is not in the HF cache (/tmp/hf) and the hub is offline"
    log = (
        "INFO start\nTraceback (most recent call last):\n  File x\nValueError: Tasks not found: foo_task.\n"
        "2026-12-01 09:17:14 | ERROR    | lmms_eval.__main__:cli_evaluate:614 - Error during evaluation: "
        "Tasks not found: foo_task. Please set `--verbosity=DEBUG` to get more information.\n"
    )
    assert run_all.failure_reason(log) == "ValueError: Tasks not found: foo_task."
    assert run_all.failure_reason("ModuleNotFoundError: No module named 'cv2'\n") == (
        "ModuleNotFoundError: No module named 'cv2'"
    )
    assert run_all.failure_reason("all fine\nlast words\n") == "last words"
    assert run_all.failure_reason("") == "no output in the log"


def test_check_results(tmp_path):
    benches = summ.load_benchmarks()
    start = time.time()
    assert run_all.check_results(benches["ai2d"], tmp_path / "ai2d", start) == "no results JSON was written"
    write_results(
        tmp_path / "ai2d" / "m" / "old_results.json",
        {"ai2d": {"exact_match,flexible-extract": 1.0}},
        mtime=start - 3600,
    )
    assert run_all.check_results(benches["ai2d"], tmp_path / "ai2d", start) == "no results JSON was written"
    write_results(
        tmp_path / "ai2d" / "m" / "new_results.json", {"ai2d": {"exact_match,flexible-extract": 1.0}}
    )
    assert run_all.check_results(benches["ai2d"], tmp_path / "ai2d", start) is None
    groups = {"mvbench": {s: {"mvbench_accuracy,none": 50.0} for s in MVBENCH}}
    path = write_results(tmp_path / "mvbench" / "m" / "x_results.json", {}, groups=groups)
    data = json.loads(path.read_text())
    del data["results"][MVBENCH[-1]]  # group_subtasks lists 20, results hold 19
    path.write_text(json.dumps(data))
    why = run_all.check_results(benches["mvbench"], tmp_path / "mvbench", start)
    assert why is not None and why.startswith("results JSON x_results.json lacks")
    groups = {"video_mmmu": {s: {"mmmu_acc,none": 0.5} for s in VIDEO_MMMU}}
    write_results(tmp_path / "video_mmmu" / "m" / "x_results.json", {}, groups=groups)
    assert run_all.check_results(benches["video_mmmu"], tmp_path / "video_mmmu", start) is None


def test_failed_preparation_fails_local_tasks(tmp_path, monkeypatch, capsys):
    script = tmp_path / "prepare.py"
    script.write_text("import sys\nprint('RuntimeError: cannot render shapes')\nsys.exit(3)\n")
    monkeypatch.setattr(run_all, "PREPARE_SCRIPT", script)
    ckpt = export(tmp_path / "ckpt")
    rc = run_all.main(
        [str(ckpt), "--tasks", "llava_ov_shapes,llava_ov_shapes_mc", "--out", str(tmp_path / "o")]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED llava_ov_shapes: data preparation failed (rc 3): RuntimeError: cannot render shapes" in out
    assert "FAILED llava_ov_shapes_mc:" in out
    assert "2 of 2 task(s) failed: llava_ov_shapes, llava_ov_shapes_mc" in out
    assert (tmp_path / "o" / "prepare_local_tasks.log").exists()
    assert (tmp_path / "o" / "summary.csv").exists()


def test_missing_module_fails_before_launch(tmp_path, monkeypatch, capsys):
    benches = summ.load_benchmarks()
    fake = dict(benches)
    fake["videomme"] = summ.Benchmark(
        **{**benches["videomme"].__dict__, "requires": {"no_such_mod_x": "pkg-x"}}
    )
    monkeypatch.setattr(summ, "load_benchmarks", lambda path=None: fake)
    monkeypatch.setattr(
        run_all,
        "run_preflight",
        lambda names, *a: {n: {"task": n, "status": "ok", "message": ""} for n in names},
    )
    monkeypatch.setattr(run_all, "run_logged", lambda *a, **k: pytest.fail("lmms-eval must not start"))
    ckpt = export(tmp_path / "ckpt")
    assert run_all.main([str(ckpt), "--tasks", "videomme", "--out", str(tmp_path / "o")]) == 1
    assert (
        "FAILED videomme: python module(s) missing: no_such_mod_x (pip install pkg-x)"
        in capsys.readouterr().out
    )
    assert sys.modules[summ.__name__] is summ  # run_all and the tests share one summarize module
