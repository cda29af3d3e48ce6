"""Held-out answers of embedded-default runs broken down by scene case and by answer (error analysis).

The trainer's evaluation reports accuracy per question type; this splits each type by what its scene
holds (:func:`llava_ov.data.synthetic_qa.scene_case`: e.g. a colour question about one of two still
objects, which only the shape tells apart) and by the reference answer (e.g. which shape of a brief
appearance is missed). It reads ``RUN/<stage>/eval.json`` (every held-out answer the run gave) and
``RUN/config.yaml`` (the run's resolved config) and rebuilds each held-out record's scene from the run's
synthetic-set config, which is deterministic (no clip is read or decoded).

    python benchmarks/qa_breakdown.py outputs/lmm_synthetic
    python benchmarks/qa_breakdown.py outputs/run_a outputs/run_b --markdown
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from encoder.cli import run_cli
from llava_ov.data.mixture import synthetic_config
from llava_ov.data.synthetic_qa import SyntheticQAConfig, make_record, scene_case
from llava_ov.report import format_table
from llava_ov.train.config import load_train_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="output folders of scripts/train_lmm.py runs")
    ap.add_argument("--stage", default="sft", help="the stage whose eval.json is read")
    ap.add_argument("--markdown", action="store_true", help="markdown tables")
    return ap.parse_args(argv)


def load_run(run: Path, stage: str) -> tuple[list[dict], SyntheticQAConfig]:
    """(the eval records, the run's synthetic-set config); one-line errors for a folder that is not a run."""
    evals, config = run / stage / "eval.json", run / "config.yaml"
    for path in (evals, config):
        if not path.is_file():
            raise FileNotFoundError(f"{run}: no {path.relative_to(run)} (not a finished train_lmm.py run?)")
    records = json.loads(evals.read_text())["records"]
    data = load_train_config(config).stage_data(stage)
    if data.synthetic is None:
        raise ValueError(f"{run}: its data config has no synthetic section (the breakdown needs scenes)")
    return records, synthetic_config(data)


def breakdown(records: list[dict], synthetic: SyntheticQAConfig) -> dict[tuple[str, str, str], list[bool]]:
    """``(qtype, "case" | "answer", value) → [correct, ...]`` over the held-out records."""
    out: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    for r in records:
        split, _, index = str(r["id"]).rpartition("_")
        record, _ = make_record(synthetic, split, int(index))
        if record["id"] != r["id"] or record["answer"] != r["answer"]:
            raise ValueError(f"held-out record {r['id']} does not match the run's synthetic config")
        out[r["qtype"], "case", scene_case(record)].append(bool(r["correct"]))
        out[r["qtype"], "answer", r["answer"]].append(bool(r["correct"]))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for run in args.runs:
        records, synthetic = load_run(run, args.stage)
        groups = breakdown(records, synthetic)
        rows = [
            [qtype, kind, value, str(len(v)), f"{sum(v) / len(v):.3f}"]
            for (qtype, kind, value), v in sorted(groups.items())
        ]
        print(f"{run} ({len(records)} held-out answers, stage {args.stage}):")
        print(format_table(["question type", "by", "value", "n", "accuracy"], rows, args.markdown))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
