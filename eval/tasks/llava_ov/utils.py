"""lmms-eval hooks of our offline tasks; their media paths are relative to data/<task data>/ here.

Prompts and scoring are the trainer's own: the question text of the held-out record, and
:func:`llava_ov.train.evaluate.score_answer` (normalised answer, first word of one-word answers).
"""

from pathlib import Path

from llava_ov.train.evaluate import score_answer

DATA = Path(__file__).resolve().parent / "data"


def motion_qa_visual(doc):
    return [str(DATA / "motion_qa" / doc["media"])]


def shapes_visual(doc):
    return [str(DATA / "shapes" / doc["media"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question']}{kw.get('post_prompt', '')}"


def process_results(doc, results):
    record = score_answer(doc["id"], doc["qtype"], doc["answer"], results[0] if results else "")
    return {"accuracy": float(record["correct"])}
