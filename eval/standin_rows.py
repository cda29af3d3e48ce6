"""The per-benchmark rows of the offline stand-ins (``eval/standins.py`` writes them): for each of the 16
tasks, the annotation tables with the column names and value sets its ``utils.py`` reads, and the media
paths (relative to HF_HOME) its task code looks for. A helper of ``eval/standins.py``, not a script.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

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
    rows: int  # of each table
    tables: list[Table] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)  # paths relative to HF_HOME
    frame_dirs: list[str] = field(default_factory=list)

    def add(self, repo: str, config: str | None, split: str, row: Callable[[int], dict]) -> None:
        """A table of ``self.rows`` rows: ``row(i)`` is row i."""
        self.tables.append(Table(repo, config, split, [row(i) for i in range(self.rows)]))

    def stills(self, repo: str, config: str | None, split: str, row: Callable[[int], dict]) -> None:
        """A table of image questions: row i is ``row(i)`` plus the PNG still i in its ``image`` column."""
        rows = [{**row(i), "image": _still(i)} for i in range(self.rows)]
        self.tables.append(Table(repo, config, split, rows, ("image",)))


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
    p = Plan(rows)
    r = range(rows)
    opts = [f"{c} square" for c in COLOURS]
    for task in tasks:
        if task == "ai2d":
            p.stills(
                "lmms-lab-encoder/ai2d",
                None,
                "test",
                lambda i: {
                    "question": "Which colour is the square?",
                    "options": opts,
                    "answer": str(i % 4),
                },
            )
        elif task == "chartqa":
            p.stills(
                "lmms-lab-encoder/ChartQA",
                None,
                "test",
                lambda i: {
                    "question": "How many squares are there?",
                    "answer": "1",
                    "type": ("human_test", "augmented_test")[i % 2],
                },
            )
        elif task in ("docvqa_val", "infovqa_val"):
            config = "DocVQA" if task == "docvqa_val" else "InfographicVQA"
            p.stills(
                "lmms-lab-encoder/DocVQA",
                config,
                "validation",
                lambda i: {
                    "questionId": str(100 + i),
                    "question": "What colour is the square?",
                    "answers": [COLOURS[i % 4]],
                },
            )
        elif task == "ocrbench":
            p.stills(
                "echo840/OCRBench",
                None,
                "test",
                lambda i: {
                    "question": "What is written in the image?",
                    "answer": [COLOURS[i % 4]],
                    "dataset": "IIIT5K",
                    "question_type": OCRBENCH_TYPES[i % len(OCRBENCH_TYPES)],
                },
            )
        elif task == "mmbench_en_dev":
            p.stills(
                "lmms-lab-encoder/MMBench",
                "en",
                "dev",
                lambda i: {
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
                },
            )
        elif task == "mmstar":
            p.stills(
                "Lin-Chen/MMStar",
                None,
                "val",
                lambda i: {
                    "index": i,
                    "question": "Which colour is the square?\nOptions: A: red, B: green, C: blue, D: yellow",
                    "answer": _letters(4)[i % 4],
                    "category": MMSTAR[i % 4][0],
                    "l2_category": MMSTAR[i % 4][1],
                },
            )
        elif task == "realworldqa":
            p.stills(
                "lmms-lab-encoder/RealWorldQA",
                None,
                "test",
                lambda i: {
                    "question": "Which colour is the square?\nA. red\nB. green\nC. blue\nD. yellow\n"
                    "Please answer directly "
                    "with only the letter of the correct option and nothing else.",
                    "answer": _letters(4)[i % 4],
                },
            )
        elif task == "videomme":
            p.add(
                "lmms-eval/Video-MME",
                None,
                "test",
                lambda i: {
                    "videoID": f"standin{i}",
                    "question_id": f"{i:03d}-1",
                    "duration": "short",
                    "domain": "Knowledge",
                    "sub_category": "Humanity & History",
                    "task_type": "Temporal Perception",
                    "question": "Which way does the object move?",
                    "options": ["A. left", "B. right", "C. up", "D. down"],
                    "answer": _letters(4)[i % 4],
                },
            )
            p.videos += [f"videomme/data/standin{i}.mp4" for i in r]
        elif task == "mvbench":
            for sub, folder in MVBENCH_FOLDERS.items():
                ext = "" if sub == FRAME_FOLDER_SUBTASK else ".mp4"
                p.add(
                    "OpenGVLab/MVBench",
                    sub,
                    "train",
                    lambda i, sub=sub, ext=ext: {
                        "video": f"{sub}_{i}{ext}",
                        "question": "Which way does the object move?",
                        "candidates": ["left", "right", "up"],
                        "answer": ("left", "right", "up")[i % 3],
                    },
                )
                paths = [f"mvbench_video/{folder}/{sub}_{i}{ext}" for i in r]
                (p.frame_dirs if sub == FRAME_FOLDER_SUBTASK else p.videos).extend(paths)
        elif task == "nextqa_mc_test":
            p.add(
                "lmms-eval/NExTQA",
                "MC",
                "test",
                lambda i: {
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
                },
            )
            p.videos += [f"nextqa/NExTVideo/{4000 + i}.mp4" for i in r]
        elif task == "perceptiontest_val_mc":
            p.add(
                "lmms-eval/PerceptionTest_Val",
                "mc_question_val",
                "validation",
                lambda i: {
                    "video_name": f"video_{i}",
                    "question_id": f"q{i}",
                    "question": "Which way does the object move?",
                    "options": ["left", "right", "up"],
                    "answer_id": i % 3,
                    "area": "physics",
                    "reasoning": "descriptive",
                    "tag": ["motion"],
                },
            )
            p.videos += [f"perceptiontest_val/videos/video_{i}.mp4" for i in r]
        elif task == "temporalbench_long_qa":
            p.add(
                "microsoft/TemporalBench",
                None,
                "test_long_qa",
                lambda i: {
                    "idx": i,
                    "video_name": f"standin/clip_{i // 2}.mp4",
                    "dataset": "standin",
                    "category": "",
                    "question": "Which caption is right?\nA. The object moves left.\n"
                    "B. The object moves right.\nAnswer with the option's letter.",
                    "GT": "AB"[i % 2],
                    "answer": "AB"[i % 2],
                },
            )
            p.videos += sorted({f"temporalbench/standin/clip_{i // 2}.mp4" for i in r})
        elif task == "video_mmmu":
            for config in VIDEO_MMMU:
                p.add(
                    "lmms-eval/VideoMMMU",
                    config,
                    "test",
                    lambda i, config=config: {
                        "id": f"{config.lower()}_Art_{i}",
                        "question": "Which way does the object move?",
                        "question_type": "multiple-choice",
                        "options": ["left", "right", "up", "down"],
                        "answer": _letters(4)[i % 4],
                    },
                )
                p.videos += [f"video_mmmu/Art/{config.lower()}_Art_{i}.mp4" for i in r]
        elif task == "mlvu_dev":
            p.add(
                "sy1998/MLVU_dev",
                None,
                "test",
                lambda i: {
                    "video_name": f"standin_{i}.mp4",
                    "duration": 4.0,
                    "question": "Which way does the object move?\n(A) left\n(B) right\n(C) up\n(D) down",
                    "candidates": ["left", "right", "up", "down"],
                    "answer": _letters(4)[i % 4],
                    "task_type": MLVU_TYPES[i % len(MLVU_TYPES)],
                    "question_id": f"q{i}",
                },
            )
            p.videos += [f"mlvu/standin_{i}.mp4" for i in r]
        elif task == "longvideobench_val_v":
            p.add(
                "longvideobench/LongVideoBench",
                None,
                "validation",
                lambda i: {
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
                },
            )
            p.videos += [f"datasets/longvideobench/videos/standin_{i}.mp4" for i in r]
        else:
            raise ValueError(f"no stand-in for task {task!r}; known: {', '.join(STANDARD)}")
    return p
