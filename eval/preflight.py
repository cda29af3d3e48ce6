"""Check, before lmms-eval runs a task, that its data loads offline and that every document's media exists.

    HF_HOME=... python eval/preflight.py --tasks a,b [--include-path DIR] [--limit N] [--report FILE]

Each task is built through lmms-eval's own ``TaskManager`` (which loads its annotations the way a run does)
and the task's own ``doc_to_visual`` is called on each document (the first N with ``--limit``). Several
tasks' ``utils.py`` end the process (``sys.exit``) or raise when a video file is missing; here that is
caught and listed. A video task whose media folder ``$HF_HOME/<cache_dir>`` does not exist is reported
without being built (lmms-eval would try ``snapshot_download`` of the whole repository). A path that
``doc_to_visual`` returns without checking it (mvbench, longvideobench) and that does not exist is not
fatal: the plugin answers that sample empty and counts it as failed media; it is listed as a warning.

Prints one line per task; ``--report`` writes the same as JSON (``bash eval/run_all_16.sh CKPT --check``
runs this for the 16 and prints a table). Exit status 0 when every task is ready, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

OK, NO_DATASET, NO_MEDIA_DIR, NO_MEDIA, ERROR = (
    "ok",
    "dataset missing",
    "media folder missing",
    "media missing",
    "error",
)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return str(exc.code)
    text = f"{type(exc).__name__}: {exc}".splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "last_attempt", None)  # tenacity.RetryError
        if inner is not None and hasattr(inner, "exception") and inner.exception() is not None:
            exc = inner.exception()
            continue
        if exc.__cause__ is not None:
            exc = exc.__cause__
            continue
        break
    return exc


def _leaves(tm, name: str) -> list[str]:
    """The task names behind ``name`` (a group's ``task:`` list, recursively)."""
    from lmms_eval.utils import load_yaml_config

    entry = tm.task_index.get(name)
    if entry is None:
        raise KeyError(f"lmms-eval has no task or group {name!r}")
    if entry["type"] != "group" or entry["yaml_path"] == -1:
        return [name]
    config = load_yaml_config(entry["yaml_path"], mode="simple")
    out = []
    for sub in config.get("task") or []:
        out += _leaves(tm, sub if isinstance(sub, str) else sub.get("task", ""))
    return out


def _media_dir(tm, leaf: str, hf_home: str) -> str | None:
    """``$HF_HOME/<cache_dir>`` of a video task (None for a task without one)."""
    from lmms_eval.utils import load_yaml_config

    kwargs = load_yaml_config(tm.task_index[leaf]["yaml_path"], mode="simple").get("dataset_kwargs") or {}
    if not kwargs.get("video") or not kwargs.get("cache_dir"):
        return None
    return os.path.join(hf_home, os.path.expanduser(kwargs["cache_dir"]))


def _visual_paths(visual) -> list[str]:
    items = visual if isinstance(visual, (list, tuple)) else [visual]
    return [str(v) for v in items if isinstance(v, (str, os.PathLike))]


def check_task(tm, name: str, hf_home: str, limit: int | None = None) -> dict:
    """Preflight of one benchmark (task or group): status, one-line message, missing documents."""
    report = {"task": name, "status": OK, "docs": 0, "missing": [], "warnings": [], "message": ""}
    try:
        leaves = _leaves(tm, name)
    except KeyError as exc:
        report.update(status=ERROR, message=str(exc.args[0]))
        return report
    dirs = {leaf: _media_dir(tm, leaf, hf_home) for leaf in leaves}
    absent = sorted({d for d in dirs.values() if d and not os.path.exists(d)})
    if absent:
        report.update(
            status=NO_MEDIA_DIR,
            message=f"media folder {absent[0]} does not exist (lmms-eval would "
            "download the whole video repository; offline it fails)",
        )
        return report
    from lmms_eval.tasks import get_task_dict

    for leaf in leaves:
        try:
            built = get_task_dict([leaf], tm)
        except BaseException as exc:  # noqa: BLE001 - a task's code may sys.exit while loading
            if isinstance(exc, KeyboardInterrupt):
                raise
            cause = _root_cause(exc)
            text = _one_line(cause)
            if "Couldn't reach" in text or "OfflineMode" in text or "Couldn't find cache" in text:
                report.update(
                    status=NO_DATASET,
                    message=f"{leaf}: the dataset is not in the HF cache "
                    f"({os.path.join(hf_home, 'datasets')}) and the hub "
                    f"is offline: {text}",
                )
            else:
                report.update(status=ERROR, message=f"{leaf}: the task does not build: {text}")
            return report
        task = next(iter(built.values()))
        docs = task.eval_docs
        n = len(docs) if limit is None else min(limit, len(docs))
        report["docs"] += n
        for doc_id in range(n):
            try:
                paths = _visual_paths(task.doc_to_visual(docs[doc_id]))
            except BaseException as exc:  # noqa: BLE001 - SystemExit from the task's utils is a missing file
                if isinstance(exc, KeyboardInterrupt):
                    raise
                report["missing"].append({"task": leaf, "doc_id": doc_id, "reason": _one_line(exc)})
                continue
            for path in paths:
                if not os.path.exists(path):
                    report["warnings"].append({"task": leaf, "doc_id": doc_id, "media": path})
    if report["missing"]:
        first = report["missing"][0]
        report.update(
            status=NO_MEDIA,
            message=f"{len(report['missing'])} of {report['docs']} document(s) "
            f"lack media, e.g. {first['task']} doc {first['doc_id']}: {first['reason']}",
        )
    elif report["warnings"]:
        first = report["warnings"][0]
        report["message"] = (
            f"{len(report['warnings'])} media path(s) do not exist (answered empty, counted as "
            f"failed media), e.g. {first['media']}"
        )
    return report


def preflight(tasks: list[str], include_path: str | None = None, limit: int | None = None) -> list[dict]:
    """Check ``tasks`` with the lmms-eval of this interpreter; HF_HOME must already be set (task code
    reads it at import)."""
    from lmms_eval.tasks import TaskManager

    hf_home = os.path.abspath(os.path.expanduser(os.environ.get("HF_HOME", "~/.cache/huggingface")))
    tm = TaskManager(verbosity="ERROR", include_path=include_path)
    return [check_task(tm, name, hf_home, limit) for name in tasks]


def format_line(r: dict) -> str:
    text = f"{r['task']}: {r['status']} ({r['docs']} docs)"
    return text + (f": {r['message']}" if r["message"] else "")


def format_table(reports: list[dict]) -> str:
    """One row per report (``run_all.py --check``), drawn by :func:`llava_ov.report.format_table`."""
    from llava_ov.report import format_table as render  # the project's one table renderer

    rows = [
        [
            r["task"],
            r["status"],
            str(r["docs"]),
            str(len(r["missing"]) or len(r["warnings"]) or ""),
            r["message"],
        ]
        for r in reports
    ]
    table = render(["task", "status", "docs", "missing", "detail"], rows, rule=False)
    return "".join(line.rstrip() + "\n" for line in table.splitlines())  # the last column unpadded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", required=True, help="comma-separated lmms-eval task or group names")
    ap.add_argument("--include-path", help="folder of extra task YAMLs")
    ap.add_argument("--limit", type=int, help="check only the first N documents of each (sub)task")
    ap.add_argument("--report", help="write the reports as JSON to this file")
    args = ap.parse_args(argv)
    if not os.environ.get("HF_HOME"):
        os.environ["HF_HOME"] = os.path.abspath(os.path.expanduser("~/.cache/huggingface"))
    reports = preflight([t for t in args.tasks.split(",") if t], args.include_path, args.limit)
    if args.report:
        Path(args.report).write_text(json.dumps(reports, indent=1))
    for r in reports:
        print(format_line(r), flush=True)
    return 0 if all(r["status"] == OK for r in reports) else 1


if __name__ == "__main__":
    from encoder.cli import run_cli  # a user's mistake: one line, exit 2

    sys.exit(run_cli(main))
