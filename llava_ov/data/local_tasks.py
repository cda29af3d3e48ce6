"""Data of the offline lmms-eval tasks: media files + one JSON line per question, relative paths.

* :func:`export_eval_source` — an eval source of a data config (e.g. the synthetic motion-QA held-out
  set) as a local task: each sample's media file is copied out of its webdataset shard to
  ``{out}/media/{key}.{ext}`` and ``{out}/test.jsonl`` gets ``{id, media, kind, question, answer,
  qtype}``, where ``question`` is the user turn without its ``<video>`` / ``<image>`` placeholder (the
  model inserts it where it was in training). Same samples, same order as the trainer's evaluator.
* :func:`write_stills` — a small image task: generated stills of shapes (the motion-QA scenes' shapes
  and colours, one frame) with ``color`` ("What colour is the circle?") and ``count`` ("How many
  shapes are there?") questions, balanced answers, deterministic per seed.

Both write ``{out}/manifest.json`` with a digest of their inputs and return at once when it matches
(a changed data config or seed rewrites the folder).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from llava_ov.data.mixture import DataConfig, resolve_shards, synthetic_config
from llava_ov.data.samples import parse_record
from llava_ov.data.shards import IMAGE_EXTS, VIDEO_EXTS, ReadConfig, iter_raw_samples
from llava_ov.data.stats import Skipped
from llava_ov.data.synthetic_qa import SUFFIX, config_hash
from llava_ov.data.synthetic_scenes import (
    COLORS,
    COUNTS,
    SHAPES,
    SceneObject,
    SceneParams,
    background,
    render,
    static_object,
)
from llava_ov.text.conversation import normalize_conversation

DOCS = "test.jsonl"
MANIFEST = "manifest.json"
STILL_QTYPES = ("color", "count")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(out: Path, digest: str) -> bool:
    try:
        return json.loads((out / MANIFEST).read_text())["digest"] == digest and (out / DOCS).is_file()
    except (OSError, ValueError, KeyError):
        return False


def _write(out: Path, digest: str, docs: Iterator[dict[str, Any]]) -> int:
    """Write the docs into a fresh ``out`` (via a temporary folder, swapped in at the end)."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "media").mkdir(parents=True)
    n = 0
    with open(tmp / DOCS, "w") as f:
        for doc in docs:
            data = doc.pop("_bytes")
            (tmp / doc["media"]).write_bytes(data)
            f.write(json.dumps(doc) + "\n")
            n += 1
    (tmp / MANIFEST).write_text(json.dumps({"digest": digest, "count": n}) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return n


def strip_placeholders(text: str) -> str:
    for p in ("<video>\n", "<image>\n", "<video>", "<image>"):
        text = text.replace(p, "")
    return text.strip()


def _source_docs(cfg: DataConfig, name: str | None) -> Iterator[dict[str, Any]]:
    sources = [s for s in cfg.eval_sources if name in (None, s.name)]
    if not sources:
        raise ValueError(
            f"the data config has no eval source {name!r}" if name else "the data config has no eval_sources"
        )
    for source in sources:
        read = ReadConfig(0, cfg.seed, False, 0, 1, shuffle_shards=False)
        for raw in iter_raw_samples(resolve_shards(cfg, source), read, source.name):
            if isinstance(raw, Skipped):
                raise ValueError(f"unreadable shard in {source.name}: {raw.detail}")
            record = parse_record(raw.get("json"))
            files = [
                f
                for f in raw
                if not f.startswith("__") and f.rsplit(".", 1)[-1].lower() in VIDEO_EXTS | IMAGE_EXTS
            ]
            if len(files) != 1:
                raise ValueError(
                    f"{source.name}/{raw['__key__']}: a local task needs one video or image file "
                    f"per sample, found {files or 'none'} (precomputed-only shards cannot be exported)"
                )
            turns = normalize_conversation(record)
            ext = files[0].rsplit(".", 1)[-1].lower()
            key = str(raw["__key__"])
            yield {
                "id": record.get("id", key),
                "media": f"media/{key}.{ext}",
                "kind": "video" if ext in VIDEO_EXTS else "image",
                "question": strip_placeholders(turns[0].content),
                "answer": record.get("answer", turns[-1].content),
                "qtype": record.get("qtype", "all"),
                "_bytes": raw[files[0]],
            }


def export_eval_source(cfg: DataConfig, out: str | Path, source: str | None = None) -> int:
    """Write the eval source(s) of ``cfg`` as a local task folder (see the module docstring); returns
    the number of docs. Synthetic sources are generated first if they are not cached."""
    out = Path(out)
    syn = synthetic_config(cfg)
    key = {
        "sources": [s.name for s in cfg.eval_sources if source in (None, s.name)],
        "seed": cfg.seed,
        "shards": [s.shards for s in cfg.eval_sources],
        "synthetic": config_hash(syn, "heldout") if syn is not None else None,
    }
    digest = _digest(key)
    if _cached(out, digest):
        return json.loads((out / MANIFEST).read_text())["count"]
    return _write(out, digest, _source_docs(cfg, source))


def make_still(index: int, seed: int, size: int = 112) -> tuple[dict[str, Any], np.ndarray]:
    """(doc, uint8 [S, S, 3]) of still ``index``: qtypes alternate, answers cycle within a qtype."""
    qtype = STILL_QTYPES[index % len(STILL_QTYPES)]
    rng = np.random.default_rng([seed, index])
    p = SceneParams(size=size, num_frames=1)
    k = index // len(STILL_QTYPES)
    objects: list[SceneObject] = []
    if qtype == "color":
        color, shape = list(COLORS)[k % len(COLORS)], SHAPES[(k // len(COLORS)) % len(SHAPES)]
        objects.append(static_object(rng, p, shape, color, [], "target"))
        other_shape = str(rng.choice([s for s in SHAPES if s != shape]))
        other_color = str(rng.choice([c for c in COLORS if c != color]))
        objects.append(static_object(rng, p, other_shape, other_color, objects, "distractor"))
        question, answer = f"What colour is the {shape}?{SUFFIX}", color
    else:
        answer = COUNTS[k % len(COUNTS)]
        for _ in range(COUNTS.index(answer) + 1):
            objects.append(
                static_object(
                    rng, p, str(rng.choice(SHAPES)), str(rng.choice(list(COLORS))), objects, "object"
                )
            )
        question = f"How many shapes are there?{SUFFIX}"
    image = render(objects, background(rng, size), 1)[0]
    doc = {
        "id": f"still_{index:05d}",
        "kind": "image",
        "question": question,
        "answer": answer,
        "qtype": qtype,
        "choices": list(COLORS) if qtype == "color" else list(COUNTS),
    }
    return doc, image


def write_stills(out: str | Path, count: int = 60, seed: int = 7, size: int = 112) -> int:
    """The generated image task (see the module docstring) in ``out``; returns the number of docs."""
    out = Path(out)
    digest = _digest({"stills": 1, "count": count, "seed": seed, "size": size})
    if _cached(out, digest):
        return count

    def docs() -> Iterator[dict[str, Any]]:
        for i in range(count):
            doc, image = make_still(i, seed, size)
            buf = BytesIO()
            Image.fromarray(image).save(buf, format="PNG")
            yield doc | {"media": f"media/{doc['id']}.png", "_bytes": buf.getvalue()}

    return _write(out, digest, docs())


__all__ = ["DOCS", "STILL_QTYPES", "export_eval_source", "make_still", "strip_placeholders", "write_stills"]
