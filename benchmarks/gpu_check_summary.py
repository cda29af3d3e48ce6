"""The one summary table of benchmarks/gpu_check.sh, read from the logs in its folder.

python benchmarks/gpu_check_summary.py outputs/gpu_check
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def mfu_rows(text: str) -> list[list[str]]:
    return [list(m.groups()) for m in map(ROW.match, text.splitlines()) if m]


def main(folder: str) -> None:
    d = Path(folder)
    lines = ["# GPU check summary", "", "| check | result |", "| --- | --- |"]
    for status in read(d / "steps.txt").splitlines():
        lines.append(f"| step | {status} |")
    parity = json.loads(read(d / "parity.json") or "{}")
    for name, r in parity.get("results", {}).items():
        extra = (
            f", peak full {r['full_gib']:.2f} GiB / chunked {r['chunked_gib']:.2f} GiB"
            if "full_gib" in r
            else ""
        )
        lines.append(f"| parity {name} | output {r['output']:.4f}, worst grad {r['grad']:.4f}{extra} |")
    for name, ok in parity.get("pass", {}).items():
        lines.append(f"| parity verdict {name} | {'PASS' if ok else 'FAIL'} |")
    for label, log in (
        ("MFU", "mfu.log"),
        ("MFU checkpointing", "mfu_checkpointing.log"),
        ("MFU compile", "mfu_compile.log"),
    ):
        for m in re.finditer(r"^\s*(\d+)\s+\d+ out of memory", read(d / log), flags=re.M):
            lines.append(f"| {label} {m.group(1)} tokens/pack | out of memory |")
        for r in mfu_rows(read(d / log)):
            lines.append(
                f"| {label} {r[0]} tokens/pack | {r[1]} clips, {r[4]} ms/step, {r[5]} text tok/s, "
                f"{r[6]} TFLOP/s, MFU {r[7]} (6N: {r[8]}), peak {r[9]} GiB |"
            )
    text = read(d / "mfu.log")
    fams = re.findall(r"^\s{2}(\S+(?:/\S+)?)\s+([\d.]+) ms\s+([\d.]+%)$", text, flags=re.M)
    if fams:
        lines.append(
            "| profile 16k (GPU ms by family) | " + ", ".join(f"{f} {ms} ({p})" for f, ms, p in fams) + " |"
        )
    for m in re.finditer(r"ratio ([\d.]+) \(([^;]+);", read(d / "vit_packing.log")):
        lines.append(f"| ViT packing ratio ({m.group(2)}) | {m.group(1)} |")
    ev = json.loads(read(d / "main_job" / "sft" / "eval.json") or "{}")
    if ev:
        per = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in ev.get("per_type", {}).items())
        lines.append(
            f"| main job held-out | {ev.get('accuracy', float('nan')):.3f} "
            f"(chance {ev.get('chance', 0):.3f}; {per}) |"
        )
    metrics = [json.loads(x) for x in read(d / "main_job" / "metrics.jsonl").splitlines() if x.strip()]
    sft = [m for m in metrics if m.get("stage") == "sft" and "step_time_s" in m]
    if sft:
        mean = sum(m["step_time_s"] for m in sft) / len(sft)
        lines.append(
            f"| main job SFT | {len(sft)} steps, {1 / mean:.1f} steps/s (mean step {mean * 1e3:.1f} ms) |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/gpu_check")
