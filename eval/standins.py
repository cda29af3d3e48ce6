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
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

STANDARD = (
    "ai2d",
    "chartqa",
    "docvqa_val",
    "infovqa_val",
    "ocrbench",
    "mmbench_en_dev",
    "mmstar",
    "realworldqa",
    "videomme",
    "mvbench",
    "nextqa_mc_test",
    "perceptiontest_val_mc",
    "temporalbench_long_qa",
    "video_mmmu",
    "mlvu_dev",
    "longvideobench_val_v",
)
# mvbench's subtasks and the folder each one's videos sit in (mvbench/utils.py DATA_LIST)
MVBENCH_FOLDERS = {
    "action_sequence": "star/Charades_segment",
    "moving_count": "clevrer/video_validation",
    "action_prediction": "star/Charades_segment",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment",
    "action_antonym": "ssv2_video_mp4",
    "action_count": "perception/videos",
    "scene_transition": "scene_qa/video",
    "object_shuffle": "perception/videos",
    "object_existence": "clevrer/video_validation",
    "fine_grained_pose": "nturgbd_convert",
    "unexpected_action": "FunQA_test/test",
    "moving_direction": "clevrer/video_validation",
    "state_change": "perception/videos",
    "object_interaction": "star/Charades_segment",
    "character_order": "perception/videos",
    "action_localization": "sta/sta_video_segment",
    "counterfactual_inference": "clevrer/video_validation",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "moving_attribute": "clevrer/video_validation",
    "egocentric_navigation": "vlnqa",
}
FRAME_FOLDER_SUBTASK = "episodic_reasoning"  # the original release ships this one as folders of frames
VIDEO_MMMU = ("Adaptation", "Comprehension", "Perception")
MLVU_TYPES = ("anomaly_reco", "count", "ego", "needle", "order", "plotQA", "topic_reasoning")
OCRBENCH_TYPES = (
    "Regular Text Recognition",
    "Scene Text-centric VQA",
    "Doc-oriented VQA",
    "Key Information Extraction",
)
MMSTAR = (
    ("coarse perception", "image scene and topic"),
    ("fine-grained perception", "object counting"),
    ("math", "geometry"),
    ("logical reasoning", "diagram reasoning"),
)
COLOURS = ("red", "green", "blue", "yellow")


@dataclass
class Table:
    """One split of one dataset config: rows, and which columns are images."""

    repo: str
    config: str | None
    split: str
    rows: list[dict]
    images: tuple[str, ...] = ()


@dataclass
class Plan:
    tables: list[Table] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)  # paths relative to HF_HOME
    frame_dirs: list[str] = field(default_factory=list)


def _still(i: int) -> dict:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (56, 42), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    draw.rectangle((6 + 4 * i, 6, 30 + 4 * i, 30), fill=COLOURS[i % len(COLOURS)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _letters(n: int) -> str:
    return "ABCDE"[:n]


def plan(tasks: list[str], rows: int) -> Plan:
    """What to write for ``tasks``: the annotation tables and the media paths (relative to HF_HOME)."""
    p = Plan()
    r = range(rows)
    opts = [f"{c} square" for c in COLOURS]
    for task in tasks:
        if task == "ai2d":
            p.tables.append(
                Table(
                    "lmms-lab-encoder/ai2d",
                    None,
                    "test",
                    [
                        {
                            "question": "Which colour is the square?",
                            "options": opts,
                            "answer": str(i % 4),
                            "image": _still(i),
                        }
                        for i in r
                    ],
                    ("image",),
                )
            )
        elif task == "chartqa":
            p.tables.append(
                Table(
                    "lmms-lab-encoder/ChartQA",
                    None,
                    "test",
                    [
                        {
                            "question": "How many squares are there?",
                            "answer": "1",
                            "image": _still(i),
                            "type": ("human_test", "augmented_test")[i % 2],
                        }
                        for i in r
                    ],
                    ("image",),
                )
            )
        elif task in ("docvqa_val", "infovqa_val"):
            config = "DocVQA" if task == "docvqa_val" else "InfographicVQA"
            p.tables.append(
                Table(
                    "lmms-lab-encoder/DocVQA",
                    config,
                    "validation",
                    [
                        {
                            "questionId": str(100 + i),
                            "question": "What colour is the square?",
                            "answers": [COLOURS[i % 4]],
                            "image": _still(i),
                        }
                        for i in r
                    ],
                    ("image",),
                )
            )
        elif task == "ocrbench":
            p.tables.append(
                Table(
                    "echo840/OCRBench",
                    None,
                    "test",
                    [
                        {
                            "question": "What is written in the image?",
                            "answer": [COLOURS[i % 4]],
                            "dataset": "IIIT5K",
                            "question_type": OCRBENCH_TYPES[i % len(OCRBENCH_TYPES)],
                            "image": _still(i),
                        }
                        for i in r
                    ],
                    ("image",),
                )
            )
        elif task == "mmbench_en_dev":
            p.tables.append(
                Table(
                    "lmms-lab-encoder/MMBench",
                    "en",
                    "dev",
                    [
                        {
                            "index": i,
                            "question": "Which colour is the square?",
                            "hint": "nan",
                            "A": opts[0],
                            "B": opts[1],
                            "C": opts[2],
                            "D": opts[3],
                            "answer": _letters(4)[i % 4],
                            "category": "attribute_recognition",
                            "L2-category": "finegrained_perception (instance-level)",
                            "source": "standin",
                            "split": "dev",
                            "image": _still(i),
                        }
                        for i in r
                    ],
                    ("image",),
                )
            )
        elif task == "mmstar":
            p.tables.append(
                Table(
                    "Lin-Chen/MMStar",
                    None,
                    "val",
                    [
                        {
                            "index": i,
                            "question": "Which colour is the square?\nOptions: A: red, B: green, C: blue, D: yellow",
                            "answer": _letters(4)[i % 4],
                            "category": MMSTAR[i % 4][0],
                            "l2_category": MMSTAR[i % 4][1],
                            "image": _still(i),
                        }
                        for i in r
                    ],
                    ("image",),
                )
            )
        elif task == "realworldqa":
            p.tables.append(
                Table(
                    "lmms-lab-encoder/RealWorldQA",
                    None,
                    "test",
                    [
                        {
                            "question": "Which colour is the square?\nA. red\nB. green\nC. blue\nD. yellow\nPlease answer directly "
                            "with only the letter of the correct option and nothing else.",
                            "answer": _letters(4)[i % 4],
                            "image": _still(i),
                        }
                        for i in r
                    ],
                    ("image",),
                )
            )
        elif task == "videomme":
            p.tables.append(
                Table(
                    "lmms-eval/Video-MME",
                    None,
                    "test",
                    [
                        {
                            "videoID": f"standin{i}",
                            "question_id": f"{i:03d}-1",
                            "duration": "short",
                            "domain": "Knowledge",
                            "sub_category": "Humanity & History",
                            "task_type": "Temporal Perception",
                            "question": "Which way does the object move?",
                            "options": ["A. left", "B. right", "C. up", "D. down"],
                            "answer": _letters(4)[i % 4],
                        }
                        for i in r
                    ],
                )
            )
            p.videos += [f"videomme/data/standin{i}.mp4" for i in r]
        elif task == "mvbench":
            for sub, folder in MVBENCH_FOLDERS.items():
                ext = "" if sub == FRAME_FOLDER_SUBTASK else ".mp4"
                p.tables.append(
                    Table(
                        "OpenGVLab/MVBench",
                        sub,
                        "train",
                        [
                            {
                                "video": f"{sub}_{i}{ext}",
                                "question": "Which way does the object move?",
                                "candidates": ["left", "right", "up"],
                                "answer": ("left", "right", "up")[i % 3],
                            }
                            for i in r
                        ],
                    )
                )
                paths = [f"mvbench_video/{folder}/{sub}_{i}{ext}" for i in r]
                (p.frame_dirs if sub == FRAME_FOLDER_SUBTASK else p.videos).extend(paths)
        elif task == "nextqa_mc_test":
            p.tables.append(
                Table(
                    "lmms-eval/NExTQA",
                    "MC",
                    "test",
                    [
                        {
                            "video": str(4000 + i),
                            "frame_count": 8,
                            "width": 56,
                            "height": 56,
                            "question": "what does the object do",
                            "answer": i % 5,
                            "qid": i,
                            "type": "TN",
                            **{
                                f"a{k}": f"moves {d}"
                                for k, d in enumerate(("left", "right", "up", "down", "nowhere"))
                            },
                        }
                        for i in r
                    ],
                )
            )
            p.videos += [f"nextqa/NExTVideo/{4000 + i}.mp4" for i in r]
        elif task == "perceptiontest_val_mc":
            p.tables.append(
                Table(
                    "lmms-eval/PerceptionTest_Val",
                    "mc_question_val",
                    "validation",
                    [
                        {
                            "video_name": f"video_{i}",
                            "question_id": f"q{i}",
                            "question": "Which way does the object move?",
                            "options": ["left", "right", "up"],
                            "answer_id": i % 3,
                            "area": "physics",
                            "reasoning": "descriptive",
                            "tag": ["motion"],
                        }
                        for i in r
                    ],
                )
            )
            p.videos += [f"perceptiontest_val/videos/video_{i}.mp4" for i in r]
        elif task == "temporalbench_long_qa":
            p.tables.append(
                Table(
                    "microsoft/TemporalBench",
                    None,
                    "test_long_qa",
                    [
                        {
                            "idx": i,
                            "video_name": f"standin/clip_{i // 2}.mp4",
                            "dataset": "standin",
                            "category": "",
                            "question": "Which caption is right?\nA. The object moves left.\nB. The object moves right.\n"
                            "Answer with the option's letter.",
                            "GT": "AB"[i % 2],
                            "answer": "AB"[i % 2],
                        }
                        for i in r
                    ],
                )
            )
            p.videos += sorted({f"temporalbench/standin/clip_{i // 2}.mp4" for i in r})
        elif task == "video_mmmu":
            for config in VIDEO_MMMU:
                p.tables.append(
                    Table(
                        "lmms-eval/VideoMMMU",
                        config,
                        "test",
                        [
                            {
                                "id": f"{config.lower()}_Art_{i}",
                                "question": "Which way does the object move?",
                                "question_type": "multiple-choice",
                                "options": ["left", "right", "up", "down"],
                                "answer": _letters(4)[i % 4],
                            }
                            for i in r
                        ],
                    )
                )
                p.videos += [f"video_mmmu/Art/{config.lower()}_Art_{i}.mp4" for i in r]
        elif task == "mlvu_dev":
            p.tables.append(
                Table(
                    "sy1998/MLVU_dev",
                    None,
                    "test",
                    [
                        {
                            "video_name": f"standin_{i}.mp4",
                            "duration": 4.0,
                            "question": "Which way does the object move?\n(A) left\n(B) right\n(C) up\n(D) down",
                            "candidates": ["left", "right", "up", "down"],
                            "answer": _letters(4)[i % 4],
                            "task_type": MLVU_TYPES[i % len(MLVU_TYPES)],
                            "question_id": f"q{i}",
                        }
                        for i in r
                    ],
                )
            )
            p.videos += [f"mlvu/standin_{i}.mp4" for i in r]
        elif task == "longvideobench_val_v":
            p.tables.append(
                Table(
                    "longvideobench/LongVideoBench",
                    None,
                    "validation",
                    [
                        {
                            "id": f"lvb_{i}",
                            "video_path": f"standin_{i}.mp4",
                            "subtitle_path": f"standin_{i}_en.json",
                            "duration": 4.0,
                            "duration_group": 15,
                            "starting_timestamp_for_subtitles": 0.0,
                            "question": "Which way does the object move?",
                            "question_category": "TOS",
                            "correct_choice": i % 4,
                            "option0": "left",
                            "option1": "right",
                            "option2": "up",
                            "option3": "down",
                            "option4": "N/A",
                        }
                        for i in r
                    ],
                )
            )
            p.videos += [f"datasets/longvideobench/videos/standin_{i}.mp4" for i in r]
        else:
            raise ValueError(f"no stand-in for task {task!r}; known: {', '.join(STANDARD)}")
    return p


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
