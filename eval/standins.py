"""Offline stand-ins of the 16 benchmarks: a few rows per task, read by the unmodified lmms-eval task code.

    python eval/standins.py HF_HOME [--tasks a,b] [--rows N]
    HF_HOME=HF_HOME HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 bash eval/run_all_16.sh CKPT --limit 2

Each task gets ``--rows`` rows (2-4; every subtask of mvbench and video_mmmu) with the column names and
value sets its ``utils.py`` reads, generated PNG stills, and generated H.264 clips (one frame folder for
``mvbench_episodic_reasoning``), written where lmms-eval 0.7.3 looks offline: the annotations in the
``datasets`` processed cache ``HF_HOME/datasets/<namespace>___<name>/<config>/0.0.0/<hash>/`` (an Arrow
stream per split plus ``dataset_info.json``; ``load_dataset`` falls back to it with the hub offline) and
the media under each task's ``HF_HOME/<cache_dir>``. Scores on stand-ins mean nothing: they check that an
install runs every task end to end offline (``bash eval/run_all_16.sh CKPT --check`` lists what is there).
The rows come from ``eval/standin_rows.py``; this script lays them out and writes them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from encoder.scripts import load_script

HERE = Path(__file__).resolve().parent


_rows = load_script(HERE / "standin_rows.py")  # the per-benchmark row builders
STANDARD, Table, Plan, plan = _rows.STANDARD, _rows.Table, _rows.Plan, _rows.plan


def table_dir(datasets_cache: Path, repo: str, config: str | None) -> Path:
    """Where ``datasets`` looks for a processed ``load_dataset(repo, config)`` when the hub is offline."""
    from datasets.naming import camelcase_to_snakecase

    parts = repo.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    return datasets_cache / "___".join(parts) / (config or "default") / "0.0.0" / "standin"


def write_table(datasets_cache: Path, table: Table) -> Path:
    """One split as the ``datasets`` processed cache holds it: an Arrow stream and dataset_info.json."""
    import datasets
    import pyarrow as pa
    from datasets.naming import camelcase_to_snakecase

    name = camelcase_to_snakecase(table.repo.split("/")[-1])
    ds = datasets.Dataset.from_list(table.rows)
    if table.images:
        ds = ds.cast(
            datasets.Features(
                {k: datasets.Image() if k in table.images else v for k, v in ds.features.items()}
            )
        )
    out = table_dir(datasets_cache, table.repo, table.config)
    out.mkdir(parents=True, exist_ok=True)
    arrow = ds.data.table.combine_chunks()
    with (
        pa.OSFile(str(out / f"{name}-{table.split}.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, arrow.schema) as w,
    ):
        w.write_table(arrow)
    info_path = out / "dataset_info.json"
    splits = json.loads(info_path.read_text())["splits"] if info_path.exists() else {}
    splits[table.split] = {
        "name": table.split,
        "num_bytes": arrow.nbytes,
        "num_examples": len(ds),
        "dataset_name": name,
    }
    info = {
        "description": "llava-ov offline stand-in (eval/standins.py)",
        "citation": "",
        "homepage": "",
        "license": "",
        "features": ds.features.to_dict(),
        "builder_name": "parquet",
        "dataset_name": name,
        "config_name": table.config or "default",
        "version": {"version_str": "0.0.0", "major": 0, "minor": 0, "patch": 0},
        "splits": splits,
    }
    info_path.write_text(json.dumps(info, indent=1))
    return out


def build_standins(hf_home: str | Path, tasks: list[str] | None = None, rows: int = 2) -> dict[str, int]:
    """Write the stand-ins of ``tasks`` (default: all 16) under ``hf_home``; returns rows per task.

    Idempotent: tables are rewritten, existing media are kept.
    """
    if not 2 <= rows <= 4:
        raise ValueError(f"rows must be 2-4, got {rows}")
    tasks = list(tasks or STANDARD)
    hf_home = Path(hf_home).expanduser().resolve()
    p = plan(tasks, rows)
    for table in p.tables:
        write_table(hf_home / "datasets", table)
    if p.videos or p.frame_dirs:
        from encoder.codec.synthetic import make_clip

        template = hf_home / "datasets" / "standin_clip.mp4"
        if not template.exists():
            make_clip(template, "mover", width=56, height=56, num_frames=8, fps=4)
        for rel in p.videos:
            dest = hf_home / rel
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(template, dest)
        for rel in p.frame_dirs:
            _frame_folder(hf_home / rel)
    return {t: rows for t in tasks}


def _frame_folder(folder: Path, frames: int = 6) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(frames):
        img = Image.new("RGB", (56, 56), (240, 240, 240))
        img.paste((200, 30, 30), (4 + 6 * k, 20, 16 + 6 * k, 32))
        img.save(folder / f"{k:05d}.jpg", quality=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hf_home", help="the HF_HOME to fill (the runner and lmms-eval must get the same one)")
    ap.add_argument("--tasks", help=f"comma-separated, of {', '.join(STANDARD)} (default: all 16)")
    ap.add_argument("--rows", type=int, default=2, help="rows per task and subtask, 2-4 (default 2)")
    args = ap.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    unknown = sorted(set(tasks or ()) - set(STANDARD))
    if unknown:
        print(f"error: no stand-in for {', '.join(unknown)}; known: {', '.join(STANDARD)}", file=sys.stderr)
        return 2
    try:
        written = build_standins(args.hf_home, tasks, args.rows)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote stand-ins of {len(written)} task(s) under {Path(args.hf_home).resolve()}")
    print(
        f"run with: HF_HOME={Path(args.hf_home).resolve()} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "
        "bash eval/run_all_16.sh CKPT --limit 2"
    )
    return 0


if __name__ == "__main__":
    from encoder.cli import run_cli  # a user's mistake: one line, exit 2

    sys.exit(run_cli(main))
