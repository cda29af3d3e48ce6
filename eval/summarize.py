"""Summarize lmms-eval results: one 0-100 score per benchmark of benchmarks.yaml, plus averages.

    python eval/summarize.py OUT [--md FILE] [--csv FILE] [--benchmarks FILE]

Every ``*_results.json`` under OUT is read; for each benchmark the newest file holding it is used
(newest by the file's ``date`` field, then by modification time). A group's score is the
unweighted mean of its subtask scores. Defaults: OUT/summary.md and OUT/summary.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_BENCHMARKS = Path(__file__).resolve().parent / "benchmarks.yaml"
KINDS = ("image", "video")
SECTIONS = ("benchmarks", "variants", "local")
CSV_FIELDS = (
    "benchmark",
    "section",
    "kind",
    "score",
    "samples",
    "failed_media",
    "count",
    "metric",
    "source",
    "note",
)
FAILED_MEDIA = "failed_media.jsonl"  # one JSON line per sample whose media failed (written by the plugin)


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str
    metric: str
    scale: float
    section: str  # "benchmarks" (the standard set), "variants" (run on request) or "local"
    index: int | None = None
    subtasks: tuple[str, ...] = ()
    requires: dict = field(default_factory=dict)
    caveat: str | None = None
    prepare: bool = False  # local task whose data eval/prepare_local_tasks.py writes
    judge_free: str | None = None  # task run instead when no API judge is configured (same data, rule-based)

    @property
    def is_group(self) -> bool:
        return bool(self.subtasks)


def _parse_entry(raw: object, section: str, where: str) -> Benchmark:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ValueError(f"{where}: each entry needs a 'name'")
    name = raw["name"]
    known = {
        "name",
        "kind",
        "metric",
        "scale",
        "index",
        "group",
        "requires",
        "caveat",
        "prepare",
        "judge_free",
    }
    extra = set(raw) - known
    if extra:
        raise ValueError(f"{where}: {name}: unknown field(s) {sorted(extra)}")
    kind, metric, scale = raw.get("kind"), raw.get("metric"), raw.get("scale")
    if kind not in KINDS:
        raise ValueError(f"{where}: {name}: kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(metric, str) or "," not in metric:
        raise ValueError(f"{where}: {name}: metric must look like '<metric>,<filter>', got {metric!r}")
    if scale not in (1, 100):
        raise ValueError(f"{where}: {name}: scale must be 1 or 100, got {scale!r}")
    index = raw.get("index")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
        raise ValueError(f"{where}: {name}: index must be an integer, got {index!r}")
    subtasks: tuple[str, ...] = ()
    group = raw.get("group")
    if group is not None:
        if not isinstance(group, dict) or group.get("aggregate", "mean") != "mean":
            raise ValueError(f"{where}: {name}: group must be a mapping with aggregate: mean")
        subtasks = tuple(group.get("subtasks") or ())
        if not subtasks or not all(isinstance(s, str) for s in subtasks):
            raise ValueError(f"{where}: {name}: group.subtasks must be a non-empty list of task names")
    requires = raw.get("requires") or {}
    if not isinstance(requires, dict):
        raise ValueError(f"{where}: {name}: requires must map module -> pip package")
    prepare = raw.get("prepare", False)
    if not isinstance(prepare, bool):
        raise ValueError(f"{where}: {name}: prepare must be true or false, got {prepare!r}")
    judge_free = raw.get("judge_free")
    if judge_free is not None and not isinstance(judge_free, str):
        raise ValueError(f"{where}: {name}: judge_free must be a task name, got {judge_free!r}")
    return Benchmark(
        name,
        kind,
        metric,
        float(scale),
        section,
        index,
        subtasks,
        dict(requires),
        raw.get("caveat"),
        prepare,
        judge_free,
    )


def load_benchmarks(path: str | Path | None = None) -> dict[str, Benchmark]:
    """Benchmarks by name, in file order: the standard section first, then ``variants``, then ``local``."""
    path = Path(path) if path else DEFAULT_BENCHMARKS
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not set(data) <= set(SECTIONS):
        raise ValueError(f"{path}: top level must hold only the sections {SECTIONS}")
    out: dict[str, Benchmark] = {}
    for section in SECTIONS:
        for raw in data.get(section) or []:
            bench = _parse_entry(raw, section, f"{path} [{section}]")
            if bench.name in out:
                raise ValueError(f"{path}: {bench.name} is listed twice")
            out[bench.name] = bench
    return out


@dataclass
class ResultsFile:
    path: Path
    date: str
    mtime: float
    results: dict
    group_subtasks: dict
    n_samples: dict

    @property
    def order(self) -> tuple:
        return (self.date, self.mtime, str(self.path))


def read_results_file(path: Path) -> ResultsFile:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ValueError("no 'results' mapping")
    date = data.get("date")
    if not isinstance(date, str):
        date = path.name[: -len("_results.json")]
    return ResultsFile(
        path=path,
        date=date,
        mtime=path.stat().st_mtime,
        results=data["results"],
        group_subtasks=data.get("group_subtasks") or {},
        n_samples=data.get("n-samples") or {},
    )


def results_paths(folder: str | Path) -> list[Path]:
    """lmms-eval's ``*_results.json`` files under ``folder``; not the files tasks write into
    ``submissions/`` (e.g. mmbench's ``submissions/mmbench_en_dev_results.json``)."""
    folder = Path(folder)
    return sorted(
        p
        for p in folder.rglob("*_results.json")
        if p.is_file() and "submissions" not in p.relative_to(folder).parts[:-1]
    )


def count_failed_media(path: str | Path, tasks: list[str] | None = None) -> dict[str, int]:
    """Samples with failed media per (sub)task from a ``failed_media.jsonl`` (missing file: none)."""
    counts: dict[str, int] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return counts
    seen = set()
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or (tasks is not None and rec.get("task") not in tasks):
            continue
        key = (rec.get("task"), rec.get("split"), rec.get("doc_id"))
        if key not in seen:  # one sample may hold several media
            seen.add(key)
            counts[str(rec.get("task"))] = counts.get(str(rec.get("task")), 0) + 1
    return counts


def find_results(out_dir: str | Path, notes: list[str] | None = None) -> list[ResultsFile]:
    """All readable lmms-eval results files under ``out_dir``, oldest first."""
    found = []
    for path in results_paths(out_dir):
        try:
            found.append(read_results_file(path))
        except (OSError, ValueError) as exc:
            if notes is not None:
                notes.append(f"skipped unreadable {path}: {exc}")
    return sorted(found, key=lambda rf: rf.order)


def subtasks_of(bench: Benchmark, rf: ResultsFile | None = None) -> list[str]:
    """The lmms-eval tasks whose results make up ``bench`` (the JSON's group_subtasks first; for a
    judge-free run, the task run in its place)."""
    if not bench.is_group:
        if (
            rf is not None
            and bench.judge_free
            and bench.name not in rf.results
            and bench.judge_free in rf.results
        ):
            return [bench.judge_free]
        return [bench.name]
    listed = rf.group_subtasks.get(bench.name) if rf is not None else None
    return list(listed) if listed else list(bench.subtasks)


def metric_value(bench: Benchmark, entry: dict) -> tuple[float | None, str]:
    """The benchmark's 0-100 score from one ``results[task]`` entry, or (None, why not)."""
    if bench.metric not in entry:
        keys = sorted(k for k in entry if "," in k and "_stderr" not in k)
        return None, f"no {bench.metric} (has: {', '.join(keys) or 'nothing'})"
    value = entry[bench.metric]
    if isinstance(value, (list, tuple)):
        if bench.index is None:
            return None, f"{bench.metric} is a list; set 'index' in benchmarks.yaml"
        if not -len(value) <= bench.index < len(value):
            return None, f"{bench.metric} has {len(value)} elements, index {bench.index} is out of range"
        value = value[bench.index]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"{bench.metric} is not a number: {value!r}"
    return float(value) * (100.0 / bench.scale), ""


def _samples(rf: ResultsFile, task: str) -> int:
    counts = rf.n_samples.get(task) or {}
    value = counts.get("effective", counts.get("original"))
    return int(value) if isinstance(value, (int, float)) else 0


@dataclass
class Row:
    name: str
    kind: str
    section: str
    score: float | None
    samples: int
    count: int  # (sub)tasks behind the score
    metric: str
    source: str
    note: str = ""
    failed_media: int = 0  # samples whose media failed (answered empty by the plugin)


@dataclass
class Average:
    name: str
    score: float | None
    count: int  # benchmarks averaged
    samples: int


@dataclass
class Summary:
    rows: list[Row]
    averages: list[Average]
    notes: list[str]

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)


def score_benchmark(bench: Benchmark, rf: ResultsFile, out_dir: Path) -> Row:
    tasks = subtasks_of(bench, rf)
    present = [t for t in tasks if isinstance(rf.results.get(t), dict)]
    scores, samples, problems = [], 0, []
    for task in present:
        value, why = metric_value(bench, rf.results[task])
        if value is None:
            problems.append(f"{task}: {why}" if bench.is_group else why)
            continue
        scores.append(value)
        samples += _samples(rf, task)
    if bench.is_group and len(scores) < len(tasks):
        problems.insert(0, f"only {len(scores)} of {len(tasks)} subtasks scored")
    elif bench.is_group:
        problems.insert(0, f"mean of {len(tasks)} subtasks")
    if bench.is_group and set(tasks) != set(bench.subtasks):
        problems.append(
            f"the JSON's group_subtasks differ from benchmarks.yaml ({len(bench.subtasks)} listed)"
        )
    if tasks == [bench.judge_free]:
        problems.append(f"judge-free: {bench.judge_free}'s rule-based matching, no API judge")
    try:
        source = str(rf.path.relative_to(out_dir))
        parts = Path(source).parts
        failed_file = out_dir / (parts[0] if len(parts) > 1 else "") / FAILED_MEDIA
    except ValueError:
        source, failed_file = str(rf.path), rf.path.parent / FAILED_MEDIA
    failed = sum(count_failed_media(failed_file, tasks).values())
    if failed:
        problems.insert(0, f"FAILED MEDIA: {failed} sample(s) answered empty ({failed_file})")
    return Row(
        name=bench.name,
        kind=bench.kind,
        section=bench.section,
        score=sum(scores) / len(scores) if scores else None,
        samples=samples,
        count=len(scores),
        metric=bench.metric,
        source=source,
        note="; ".join(problems),
        failed_media=failed,
    )


def _holds(bench: Benchmark, rf: ResultsFile) -> bool:
    return any(isinstance(rf.results.get(t), dict) for t in subtasks_of(bench, rf))


def summarize(out_dir: str | Path, benchmarks: dict[str, Benchmark] | str | Path | None = None) -> Summary:
    """Scores of every benchmark present under ``out_dir`` (newest results file per benchmark)."""
    out_dir = Path(out_dir)
    if not isinstance(benchmarks, dict):
        benchmarks = load_benchmarks(benchmarks)
    notes: list[str] = []
    files = find_results(out_dir, notes)
    rows = []
    for bench in benchmarks.values():
        holding = [rf for rf in files if _holds(bench, rf)]
        if holding:
            rows.append(score_benchmark(bench, holding[-1], out_dir))
    # a judge-free run of a benchmark is its row, not also a row of the variant it ran
    used = {(r.source, b.judge_free) for r in rows if (b := benchmarks[r.name]).judge_free}
    rows = [r for r in rows if (r.source, r.name) not in used]
    known = set(benchmarks)
    for bench in benchmarks.values():
        known.update(bench.subtasks)
    for rf in files:
        for group, subs in rf.group_subtasks.items():
            if group in benchmarks:
                known.update(subs)
    ignored = sorted({t for rf in files for t in rf.results} - known)
    if ignored:
        notes.append(f"ignored (not in benchmarks.yaml): {', '.join(ignored)}")
    standard = [r for r in rows if r.section == "benchmarks" and r.score is not None]
    averages = []
    for label, kinds in (
        ("video average", ("video",)),
        ("image/document average", ("image",)),
        ("overall average", KINDS),
    ):
        chosen = [r for r in standard if r.kind in kinds]
        score = sum(r.score for r in chosen) / len(chosen) if chosen else None
        averages.append(Average(label, score, len(chosen), sum(r.samples for r in chosen)))
    return Summary(rows, averages, notes)


def _fmt(score: float | None) -> str:
    return "-" if score is None else f"{score:.2f}"


def table_lines(summary: Summary) -> list[list[str]]:
    lines = [["benchmark", "kind", "score", "samples", "failed media", "metric", "note"]]
    for r in summary.rows:
        name = (
            r.name
            if r.section == "benchmarks"
            else f"{r.name} ({'local' if r.section == 'local' else 'variant'})"
        )
        name += " (!)" if r.failed_media else ""
        lines.append([name, r.kind, _fmt(r.score), str(r.samples), str(r.failed_media), r.metric, r.note])
    for a in summary.averages:
        lines.append([f"{a.name} ({a.count} benchmarks)", "", _fmt(a.score), str(a.samples), "", "", ""])
    return lines


def format_markdown(summary: Summary) -> str:
    lines = table_lines(summary)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    right = {2, 3, 4}

    def fmt(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths)]
    text = [fmt(lines[0]), fmt(rule)] + [fmt(line) for line in lines[1:]]
    if not summary.rows:
        text.append("")
        text.append("(no results of any benchmark in benchmarks.yaml)")
    if any(r.failed_media for r in summary.rows):
        text.append("")
        text.append(
            "(!) some samples' media could not be read: they were answered empty and scored as such; "
            "see the note and failed_media.jsonl"
        )
    if summary.notes:
        text.append("")
        text.extend(f"note: {n}" for n in summary.notes)
    return "\n".join(text) + "\n"


def write_csv(summary: Summary, path: str | Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for r in summary.rows:
            score = "" if r.score is None else round(r.score, 4)
            writer.writerow(
                [
                    r.name,
                    r.section,
                    r.kind,
                    score,
                    r.samples,
                    r.failed_media,
                    r.count,
                    r.metric,
                    r.source,
                    r.note,
                ]
            )
        for a in summary.averages:
            score = "" if a.score is None else round(a.score, 4)
            writer.writerow([a.name, "average", "", score, a.samples, "", a.count, "", "", ""])


def write_outputs(
    summary: Summary, out_dir: str | Path, md: str | Path | None = None, csv_path: str | Path | None = None
) -> tuple[Path, Path]:
    md_path = Path(md) if md else Path(out_dir) / "summary.md"
    csv_file = Path(csv_path) if csv_path else Path(out_dir) / "summary.csv"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    csv_file.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(format_markdown(summary), encoding="utf-8")
    write_csv(summary, csv_file)
    return md_path, csv_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder holding lmms-eval outputs (searched recursively)")
    parser.add_argument("--md", help="markdown table to write (default OUT/summary.md)")
    parser.add_argument("--csv", help="CSV table to write (default OUT/summary.csv)")
    parser.add_argument("--benchmarks", help="benchmark list (default: benchmarks.yaml next to this script)")
    args = parser.parse_args(argv)
    if not Path(args.out).is_dir():
        print(f"error: results folder not found: {args.out}", file=sys.stderr)
        return 2
    try:
        summary = summarize(args.out, args.benchmarks)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_markdown(summary), end="")
    md_path, csv_file = write_outputs(summary, args.out, args.md, args.csv)
    print(f"wrote {md_path} and {csv_file}")
    return 0 if summary.rows else 1


if __name__ == "__main__":
    from encoder.cli import run_cli  # a user's mistake: one line, exit 2

    sys.exit(run_cli(main))
