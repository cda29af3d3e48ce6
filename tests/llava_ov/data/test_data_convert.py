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

ROOT = Path(__file__).resolve().parents[3]
CODEC_SET = ["decode.num_frames=8", "decode.input_size=56", "select.budget=32"]


def _script():
    spec = importlib.util.spec_from_file_location(
        "convert_llava_json", ROOT / "scripts" / "convert_llava_json.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _convert(data: Path, media_root: Path, out: Path, *args: str) -> int:
    """scripts/convert_llava_json.py (quiet) of ``data`` and ``media_root`` into ``out``: the exit status."""
    return _script().main([str(data), "--media-root", str(media_root), "--out", str(out), *args, "--quiet"])


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
    rc = _convert(
        dataset / "data.json", dataset / "media", out, "--workers", str(workers), "--samples-per-shard", "2"
    )
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
    rc = _convert(dataset / "data.json", dataset / "media", out, "--precompute-codec", "--set", *CODEC_SET)
    assert rc == 1
    raws = _samples(out)
    assert [sorted(k for k in r if not k.startswith("__")) for r in raws] == [["json", "npz"]] * 3
    sels = [PatchSelection.from_bytes(r["npz"]) for r in raws]
    assert len(sels[1]) == 32 and sels[1].grid_hw == (4, 4)  # the video under the codec budget
    assert sels[0].meta["mode"] == "image" and len(sels[0]) <= 32  # a still under the clips' token cap
    decoded = decode_sample(raws[1], CodecConfig())  # npz: the codec config is not used
    assert decoded.kinds == ["video"] and len(decoded.media[0]) == 32


def test_a_large_still_is_precomputed_under_the_token_cap(tmp_path):
    from PIL import Image

    (tmp_path / "m").mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(
        tmp_path / "m/big.jpg"
    )
    (tmp_path / "d.json").write_text(
        json.dumps([{"id": "big", "image": "big.jpg", "conversations": _turns("What is it?", "<image>")}])
    )
    for extra, cap in (([], 32), (["image_max_cells=12"], 12)):
        out = tmp_path / f"out{cap}"
        assert (
            _convert(
                tmp_path / "d.json", tmp_path / "m", out, "--precompute-codec", "--set", *CODEC_SET, *extra
            )
            == 0
        )
        sel = PatchSelection.from_bytes(_samples(out)[0]["npz"])
        gh, gw = sel.grid_hw
        assert len(sel) == gh * gw and cap * 0.75 <= len(sel) <= cap and gw > gh  # native size: 1,564 patches


def test_all_good_exit_zero(dataset, tmp_path):
    records = json.loads((dataset / "data.json").read_text())
    good = [r for r in records if r["id"] in ("vid", "png")]
    (tmp_path / "good.jsonl").write_text("\n".join(json.dumps(r) for r in good))
    rc = _convert(tmp_path / "good.jsonl", dataset / "media", tmp_path / "o")
    assert rc == 0 and not (tmp_path / "o" / "failures.txt").exists()
    assert len(_samples(tmp_path / "o")) == 2


def test_bad_records_are_counted_failures_and_only_good_ones_are_written(dataset, tmp_path, capsys):
    records = json.loads((dataset / "data.json").read_text())
    good = [r for r in records if r["id"] in ("vid", "png")]
    bad = [
        "just a string",
        {"id": "conv-str", "image": "imgs/a.jpg", "conversations": "What is it?"},
        {"id": "turn-str", "image": "imgs/a.jpg", "conversations": ["hello", "there"]},
        {"id": "role", "conversations": [{"from": "robot", "value": "hi"}]},
        {"id": "media-int", "image": 7, "conversations": _turns("What?", "<image>")},
        {"id": "gone", "image": "imgs/missing.jpg", "conversations": _turns("And this?", "<image>")},
        {"id": "broken", "video": "broken.mp4", "conversations": _turns("What moves?", "<video>")},
    ]
    (tmp_path / "mixed.json").write_text(json.dumps([bad[0], good[0], *bad[1:4], good[1], *bad[4:]]))
    out = tmp_path / "o"
    rc = _convert(tmp_path / "mixed.json", dataset / "media", out, "--samples-per-shard", "1")
    assert rc == 1
    assert [r["__key__"] for r in _samples(out)] == ["vid", "png"]
    assert not list(out.glob("*.tmp"))
    failures = dict(line.split("\t") for line in (out / "failures.txt").read_text().splitlines())
    assert set(failures) == {"000000000", "conv-str", "turn-str", "role", "media-int", "gone", "broken"}
    assert all(
        failures[k].startswith("bad record")
        for k in ("000000000", "conv-str", "turn-str", "role", "media-int")
    )
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.endswith("7 failed (bad record 5, corrupt media 1, missing media 1)"), summary


@pytest.mark.parametrize("case", ["syntax", "jsonl-syntax", "missing-json", "missing-root", "workers"])
def test_bad_inputs_exit_2_with_one_line(dataset, tmp_path, capsys, case):
    data, root, extra = tmp_path / "d.json", dataset / "media", []
    data.write_text(json.dumps(json.loads((dataset / "data.json").read_text())))
    if case == "syntax":
        data.write_text('[{"id": "a", "conversations": [}]')
    elif case == "jsonl-syntax":
        data.write_text('{"id": "a"}\n{"id": \n')
    elif case == "missing-json":
        data = tmp_path / "nope.json"
    elif case == "missing-root":
        root = tmp_path / "no-media"
    elif case == "workers":
        extra = ["--workers", "0"]
    out = tmp_path / "o"
    rc = _convert(data, root, out, *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    expected = {
        "syntax": "line 1, column",
        "jsonl-syntax": "line 2, column",
        "missing-json": "cannot read",
        "missing-root": "media folder not found",
        "workers": "--workers",
    }[case]
    assert expected in err[0]
    assert not list(out.glob("*.tar*")) if out.exists() else True


def test_an_interrupted_write_leaves_no_partial_shard(tmp_path):
    from llava_ov.data.shards import ShardWriter

    with pytest.raises(RuntimeError), ShardWriter(tmp_path, max_samples=2) as writer:
        for i in range(3):
            writer.write(f"k{i}", {"conversations": []})
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]  # the complete one only
