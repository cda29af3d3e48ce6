"""LLaVA JSON → shards: good samples written, missing/corrupt media listed, exit code 1."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from encoder.codec import CodecConfig, DecodeConfig, PatchSelection, SelectConfig
from encoder.codec.synthetic import make_clip
from llava_ov.data.samples import decode_sample
from llava_ov.data.shards import ReadConfig, iter_raw_samples

ROOT = Path(__file__).resolve().parents[2]
CODEC_SET = ["decode.num_frames=8", "decode.input_size=56", "select.budget=32"]


def _script():
    spec = importlib.util.spec_from_file_location("convert_llava_json", ROOT / "scripts" / "convert_llava_json.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _turns(q: str, media: str) -> list[dict]:
    return [{"from": "human", "value": f"{media}\n{q}"}, {"from": "gpt", "value": "Something."}]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("llava")
    media = root / "media"
    (media / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(media / "imgs" / name)
    make_clip(media / "v.mp4", "mover", width=64, height=64, num_frames=8, seed=0)
    (media / "broken.mp4").write_bytes(b"this is not a video at all" * 20)
    records = [
        {"id": "img/a.1", "image": "imgs/a.jpg", "conversations": _turns("What is it?", "<image>")},
        {"id": "vid", "video": "v.mp4", "conversations": _turns("What moves?", "<video>")},
        {"id": "gone", "image": "imgs/missing.jpg", "conversations": _turns("And this?", "<image>")},
        {"id": "broken", "video": "broken.mp4", "conversations": _turns("What moves?", "<video>")},
        {"id": "png", "image": "imgs/b.png", "conversations": _turns("Colour?", "<image>")},
    ]
    (root / "data.json").write_text(json.dumps(records))
    return root


def _samples(out: Path) -> list[dict]:
    return list(iter_raw_samples(str(out), ReadConfig(shuffle_shards=False)))


@pytest.mark.parametrize("workers", [1, 2])
def test_convert_writes_good_lists_failures(dataset, tmp_path, capsys, workers):
    out = tmp_path / "shards"
    rc = _script().main([str(dataset / "data.json"), "--media-root", str(dataset / "media"), "--out", str(out),
                         "--workers", str(workers), "--samples-per-shard", "2", "--quiet"])
    assert rc == 1
    raws = _samples(out)
    assert [r["__key__"] for r in raws] == ["img_a_1", "vid", "png"]
    assert {k for r in raws for k in r if not k.startswith("__")} == {"json", "jpg", "mp4", "png"}
    failures = dict(line.split("\t") for line in (out / "failures.txt").read_text().splitlines())
    assert set(failures) == {"gone", "broken"}
    assert failures["gone"].startswith("missing media") and failures["broken"].startswith("corrupt media")
    err = capsys.readouterr()
    assert "gone" in err.err and "wrote 3 samples" in err.out
    codec = CodecConfig(decode=DecodeConfig(num_frames=8, input_size=56), select=SelectConfig(budget=32))
    decoded = [decode_sample(r, codec) for r in raws]
    assert [d.kinds for d in decoded] == [["image"], ["video"], ["image"]]
    assert json.loads(raws[0]["json"])["id"] == "img/a.1"


def test_precompute_codec_writes_npz(dataset, tmp_path):
    out = tmp_path / "npz"
    rc = _script().main([str(dataset / "data.json"), "--media-root", str(dataset / "media"), "--out", str(out),
                         "--precompute-codec", "--set", *CODEC_SET, "--quiet"])
    assert rc == 1
    raws = _samples(out)
    assert [sorted(k for k in r if not k.startswith("__")) for r in raws] == [["json", "npz"]] * 3
    sels = [PatchSelection.from_bytes(r["npz"]) for r in raws]
    assert len(sels[1]) == 32 and sels[1].grid_hw == (4, 4)  # the video under the codec budget
    assert sels[0].meta["mode"] == "image" and sels[0].grid_hw == (2, 4)  # 30x50 → 28x56
    decoded = decode_sample(raws[1], CodecConfig())  # npz: the codec config is not used
    assert decoded.kinds == ["video"] and len(decoded.media[0]) == 32


def test_all_good_exit_zero(dataset, tmp_path):
    records = json.loads((dataset / "data.json").read_text())
    good = [r for r in records if r["id"] in ("vid", "png")]
    (tmp_path / "good.jsonl").write_text("\n".join(json.dumps(r) for r in good))
    rc = _script().main([str(tmp_path / "good.jsonl"), "--media-root", str(dataset / "media"),
                         "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 0 and not (tmp_path / "o" / "failures.txt").exists()
    assert len(_samples(tmp_path / "o")) == 2
