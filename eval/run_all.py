"""Run lmms-eval benchmarks on one checkpoint, one process per task, then summarize.

    bash eval/run_all_16.sh CKPT [--tasks a,b] [--limit N] [--out DIR] [--num-processes N]
                                 [--model-args k=v,k=v] [--model NAME] [--include-path DIR]
                                 [--batch-size B] [--benchmarks FILE] [--local-data ARGS] [--dry-run]
                                 [--check] [--allow-failed-media]

Before any launch, eval/preflight.py builds each task through lmms-eval's task manager and calls its
doc_to_visual on each document: a task whose data does not load or whose media is missing is skipped
with one line saying what and where (``--check`` does only that and prints a table). Each task's output
goes to OUT/<task>/ (lmms-eval's results and samples, lmms_eval.log with its stdout+stderr, and the
plugin's failed_media.jsonl). lmms-eval exits 0 even when a task fails, so a task counts as done only
when a results JSON written during this run holds it (for a group: all its subtasks). Exit status: 0
when every task succeeded, 1 when any failed, 2 for a usage error, 3 when every task ran but some
samples' media failed (0 with --allow-failed-media).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from encoder.scripts import load_script as load_script_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PREPARE_SCRIPT = HERE / "prepare_local_tasks.py"
PREFLIGHT_SCRIPT = HERE / "preflight.py"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LOGURU_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \| \w+\s*\| \S+ - ")
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::\s|$)")
DIST_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "ACCELERATE_USE_CPU",
)
UNINFORMATIVE = ("RetryError", "Please set `--verbosity=DEBUG`")


def load_summarize():
    """eval/summarize.py as a module (eval/ is a folder of scripts, not a package)."""
    return load_script("summarize")


def load_script(script: str):
    """eval/<script>.py as a module, loaded once (the tests load them under the same names)."""
    return load_script_file(HERE / f"{script}.py")


launch = load_script("launch")  # the lmms-eval command line of each task
OUR_MODEL = launch.OUR_MODEL
JUDGE_ENV = launch.JUDGE_ENV
default_out = launch.default_out
hf_home = launch.hf_home
free_port = launch.free_port
launcher = launch.launcher
failures_file = launch.failures_file
judge_configured = launch.judge_configured
launch_name = launch.launch_name
task_command = launch.task_command


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bash eval/run_all_16.sh",
        description="Run the lmms-eval benchmarks on one checkpoint, then summarize.",
    )
    p.add_argument("ckpt", help="stage export folder, passed to the model as pretrained=CKPT")
    p.add_argument("--tasks", help="comma-separated benchmark names (default: the 16 standard ones)")
    p.add_argument("--limit", type=_positive_int, help="evaluate only the first N samples of each task")
    p.add_argument("--out", help="output folder (default: outputs/eval/<last parts of the ckpt path>)")
    p.add_argument(
        "--num-processes",
        type=_positive_int,
        default=1,
        help=">1: several processes split the requests (accelerate launch on GPUs, torchrun on CPU)",
    )
    p.add_argument("--model-args", default="", help="extra k=v,k=v appended to pretrained=CKPT")
    p.add_argument("--model", default="llava_ov", help="lmms-eval model name (default llava_ov)")
    p.add_argument("--include-path", default=str(HERE / "tasks"), help="folder of extra task YAMLs")
    p.add_argument("--batch-size", type=_positive_int, default=1)
    p.add_argument("--benchmarks", help="benchmark list (default: eval/benchmarks.yaml)")
    p.add_argument(
        "--local-data",
        default="",
        metavar="ARGS",
        help='arguments for prepare_local_tasks.py, e.g. "--config RUN.yaml data.synthetic.out_dir=D" '
        "(default: the embedded default's held-out set)",
    )
    p.add_argument("--dry-run", action="store_true", help="print each task's command, one per line, and exit")
    p.add_argument(
        "--check",
        action="store_true",
        help="only check that each task's data loads offline and its media exist; print a table",
    )
    p.add_argument(
        "--allow-failed-media",
        action="store_true",
        help="exit 0 even when some samples' media failed (they are still counted and shown)",
    )
    return p.parse_args(argv)


def prepare_command(tasks: list[str], include: Path, extra: str = "") -> list[str]:
    """``extra``: further arguments of prepare_local_tasks.py (e.g. ``--config RUN.yaml key=value``: the
    run whose held-out set the motion-QA task is)."""
    return [
        sys.executable,
        str(PREPARE_SCRIPT),
        "--tasks-dir",
        str(include),
        "--tasks",
        ",".join(tasks),
        *shlex.split(extra),
    ]


def _clean(line: str) -> str:
    return LOGURU_PREFIX.sub("", ANSI.sub("", line)).strip()


def failure_reason(log_text: str, hf_home_dir: str | None = None) -> str:
    """The most informative line of a failed run's log."""
    text = ANSI.sub("", log_text)
    where = f" ({hf_home_dir})" if hf_home_dir else ""
    m = re.search(r"Couldn't reach '([^']+)' on the Hub \((\w+)\)", text)
    if m:
        how = "the hub is offline" if "Offline" in m.group(2) else f"the hub cannot be reached ({m.group(2)})"
        return f"dataset '{m.group(1)}' is not in the HF cache{where} and {how}"
    lines = [_clean(line) for line in text.splitlines()]
    lines = [line for line in lines if line and not any(u in line for u in UNINFORMATIVE)]
    last = ""
    for pick in (lambda ln: EXCEPTION_LINE.match(ln), lambda ln: "Error" in ln or "Exception" in ln):
        hits = [line for line in lines if pick(line)]
        if hits:
            last = hits[-1][:400]
            break
    if re.search(r"OfflineModeIsEnabled|LocalEntryNotFoundError", text):
        return f"files are not in the HF cache{where} and the hub is offline: {last}"
    return last or (lines[-1][:400] if lines else "no output in the log")


def check_results(bench, task_dir: Path, since: float) -> str | None:
    """None when a results JSON written since ``since`` holds the task (group: all subtasks), else why not."""
    summ = load_summarize()
    fresh = [p for p in summ.results_paths(task_dir) if p.stat().st_mtime >= since - 1]
    why = "no results JSON was written"
    for path in sorted(fresh, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            rf = summ.read_results_file(path)
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            why = f"unreadable results JSON {path}: {exc}"
            continue
        missing = [t for t in summ.subtasks_of(bench, rf) if not isinstance(rf.results.get(t), dict)]
        if not missing:
            return None
        why = f"results JSON {path.name} lacks {', '.join(missing)}"
    return why


def missing_modules(bench) -> list[str]:
    return [
        f"{mod} (pip install {pkg})"
        for mod, pkg in bench.requires.items()
        if importlib.util.find_spec(mod) is None
    ]


def run_logged(cmd: list[str], log_path: Path, env: dict) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def prepare_local(tasks: list[str], include: Path, out: Path, env: dict, extra: str = "") -> str | None:
    """Generate the local tasks' data; None on success, else the reason."""
    if not PREPARE_SCRIPT.exists():
        return f"{PREPARE_SCRIPT} not found"
    log_path = out / "prepare_local_tasks.log"
    start = time.time()
    rc = run_logged(prepare_command(tasks, include, extra), log_path, env)
    status = "OK" if rc == 0 else "FAILED"
    print(f"prepare local data ({', '.join(tasks)})  {time.time() - start:.1f} s  {status}", flush=True)
    if rc == 0:
        return None
    return f"data preparation failed (rc {rc}): {failure_reason(_read(log_path))} (log: {log_path})"


def run_preflight(names: list[str], include: Path, limit: int | None, env: dict, report: Path) -> dict | str:
    """eval/preflight.py in a child process (task code reads HF_HOME at import): reports by task name,
    or why the check itself failed."""
    cmd = [
        sys.executable,
        str(PREFLIGHT_SCRIPT),
        "--tasks",
        ",".join(names),
        "--include-path",
        str(include),
        "--report",
        str(report),
        *(["--limit", str(limit)] if limit else []),
    ]
    log_path = report.with_suffix(".log")
    report.unlink(missing_ok=True)
    rc = run_logged(cmd, log_path, env)
    try:
        return {r["task"]: r for r in json.loads(report.read_text(encoding="utf-8"))}
    except (OSError, ValueError, KeyError, TypeError):
        return f"the preflight check failed (rc {rc}): {failure_reason(_read(log_path))} (log: {log_path})"


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summ = load_summarize()
    ckpt = Path(args.ckpt).expanduser()
    ours = args.model == OUR_MODEL
    if (ours or not (args.dry_run or args.check)) and not ckpt.is_dir():
        return _usage_error(f"checkpoint folder not found: {ckpt}")
    if ours and not (ckpt / "llava_ov.json").is_file():
        return _usage_error(
            f"{ckpt} is not an LMM export (no llava_ov.json); pass a stage export such as "
            "outputs/lmm_synthetic/sft/final"
        )
    if "," in str(ckpt):
        return _usage_error(
            f"the checkpoint path must not contain ',' (lmms-eval splits model_args on it): {ckpt}"
        )
    try:
        benches = summ.load_benchmarks(args.benchmarks)
        judge = judge_configured()
    except (OSError, ValueError) as exc:
        return _usage_error(
            f"cannot read the benchmark list: {exc}" if JUDGE_ENV not in str(exc) else str(exc)
        )
    if args.tasks:
        tasks = list(dict.fromkeys(t.strip() for t in args.tasks.split(",") if t.strip()))
    else:
        tasks = [name for name, b in benches.items() if b.section == "benchmarks"]
    unknown = [t for t in tasks if t not in benches]
    if unknown or not tasks:
        return _usage_error(
            f"unknown task(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(benches)}"
        )
    out = Path(os.path.abspath(args.out)) if args.out else default_out(ckpt)
    include = Path(os.path.abspath(args.include_path))
    local = [
        t for t in tasks if benches[t].prepare
    ]  # our local tasks: data written by prepare_local_tasks.py
    run_as = {t: launch_name(benches[t], judge) for t in tasks}

    if args.dry_run:
        if local:
            print("# first: " + shlex.join(prepare_command(local, include, args.local_data)), file=sys.stderr)
        for task in tasks:
            print(shlex.join(task_command(task, args, ckpt, out, include, run_as[task])))
        return 0

    # each task's launcher sets up its own processes: a parent's distributed variables (e.g. this script
    # started inside a torchrun / deepspeed job) would make lmms-eval join a stale process group
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS} | {"HF_HOME": hf_home()}
    if args.check:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            reports = run_preflight(
                [run_as[t] for t in tasks], include, args.limit, env, Path(tmp) / "preflight.json"
            )
        if isinstance(reports, str):
            print(f"error: {reports}", file=sys.stderr)
            return 1
        preflight = load_script("preflight")
        print(f"HF_HOME={env['HF_HOME']}")
        print(preflight.format_table([reports[run_as[t]] | {"task": t} for t in tasks]), end="")
        return 0 if all(reports[run_as[t]]["status"] == "ok" for t in tasks) else 1

    out.mkdir(parents=True, exist_ok=True)
    print(f"evaluating {ckpt} on {len(tasks)} task(s) -> {out}", flush=True)
    for task in tasks:
        if run_as[task] != task:
            print(
                f"note: {task}: no API judge configured ({JUDGE_ENV}=openai with OPENAI_API_KEY to use one): "
                f"running {run_as[task]} (same data, the task's own rule-based matching, no network); "
                "the summary marks the row judge-free",
                file=sys.stderr,
            )
        elif benches[task].caveat and not judge:
            print(f"note: {benches[task].caveat}", file=sys.stderr)
    failures: dict[str, str] = {}
    if local:
        reason = prepare_local(local, include, out, env, args.local_data)
        if reason:
            failures.update(dict.fromkeys(local, reason))
    pending = [t for t in tasks if t not in failures]
    if pending:
        reports = run_preflight(
            [run_as[t] for t in pending], include, args.limit, env, out / "preflight.json"
        )
        for task in pending:
            rep = reports if isinstance(reports, str) else reports.get(run_as[task])
            if isinstance(rep, str):
                failures[task] = rep
            elif rep is None or rep["status"] != "ok":
                failures[task] = f"preflight: {rep['message'] if rep else 'no report'} (not launched)"
            elif rep["message"]:
                print(f"note: {task}: {rep['message']}", flush=True)
    media_failed: dict[str, int] = {}
    width = max(len(t) for t in tasks)
    for i, task in enumerate(tasks, 1):
        bench, task_dir = benches[task], out / task
        log_path = task_dir / "lmms_eval.log"
        start = time.time()
        if task not in failures and (missing := missing_modules(bench)):
            failures[task] = f"python module(s) missing: {', '.join(missing)}"
        if task not in failures:
            failures_file(out, task).unlink(missing_ok=True)  # the plugin appends: start empty
            try:
                rc = run_logged(task_command(task, args, ckpt, out, include, run_as[task]), log_path, env)
            except KeyboardInterrupt:
                print(f"\ninterrupted during {task} (log: {log_path})", file=sys.stderr)
                return 130
            why = check_results(replace(bench, name=run_as[task]), task_dir, start)
            if why:
                log_text = _read(log_path)
                detail = failure_reason(log_text, env["HF_HOME"]) if log_text else why
                failures[task] = f"{detail} [rc {rc}; {why}] (log: {log_path})"
            counts = summ.count_failed_media(failures_file(out, task))
            if counts:
                media_failed[task] = sum(counts.values())
                (task_dir / "failed_media.json").write_text(
                    json.dumps({"task": task, "failed": media_failed[task], "by_task": counts}, indent=1)
                )
        status = "FAILED" if task in failures else "OK"
        print(f"[{i:>2}/{len(tasks)}] {task:<{width}}  {time.time() - start:8.1f} s  {status}", flush=True)
        if task in failures:
            print(f"FAILED {task}: {failures[task]}", flush=True)
        if media_failed.get(task):
            print(
                f"MEDIA FAILED {task}: {media_failed[task]} sample(s) answered empty "
                f"({failures_file(out, task)})",
                flush=True,
            )

    summary = summ.summarize(out, benches)
    print()
    print(summ.format_markdown(summary), end="")
    md_path, csv_path = summ.write_outputs(summary, out)
    print(f"summary: {md_path}, {csv_path}")
    stale = [r for r in summary.rows if r.name in failures]
    for row in stale:
        print(f"note: {row.name}'s row comes from an earlier run ({row.source})")
    if failures:
        print(f"{len(failures)} of {len(tasks)} task(s) failed: {', '.join(failures)}")
        return 1
    if media_failed:
        total = sum(media_failed.values())
        allowed = " (allowed by --allow-failed-media)" if args.allow_failed_media else ""
        print(
            f"all {len(tasks)} task(s) ran; {total} sample(s) with failed media in "
            f"{', '.join(media_failed)}{allowed}"
        )
        return 0 if args.allow_failed_media else 3
    print(f"all {len(tasks)} task(s) succeeded")
    return 0


if __name__ == "__main__":
    from encoder.cli import run_cli  # a user's mistake: one line, exit 2

    sys.exit(run_cli(main))
