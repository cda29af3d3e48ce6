"""The codec_patchify and transcode command lines, including bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from encoder.codec.decode import PICT_TYPES
from encoder.codec.synthetic import make_clip

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    good = [
        make_clip(root / f"good{i}.mp4", "mover", width=112, height=112, num_frames=24, seed=i).path
        for i in range(2)
    ]
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is not a video\n" * 20)
    data = Path(good[0]).read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return root, [Path(g) for g in good]


def test_one_video_npz_and_png(media, tmp_path):
    _, good = media
    out = tmp_path / "one.npz"
    res = run_script(
        "codec_patchify.py",
        good[0],
        "--budget",
        "200",
        "--input-size",
        "112",
        "--frames",
        "16",
        "--out",
        out,
        "--png",
    )
    assert res.returncode == 0, res.stderr
    with np.load(out) as z:
        assert z["positions"].dtype == np.int32 and z["positions"].shape == (200, 3)
        assert z["frame_ids"].shape == (16,)
    from PIL import Image

    with Image.open(out.with_suffix(".png")) as im:
        assert im.size[0] > 112 and im.mode == "RGB"


def test_many_files_go_on_and_list_failures(media, tmp_path):
    root, good = media
    bad = [root / "empty.mp4", root / "notes.mp4", root / "missing.mp4"]
    out = tmp_path / "many"
    res = run_script(
        "codec_patchify.py",
        good[0],
        *bad,
        good[1],
        "--budget",
        "0.1",
        "--input-size",
        "112",
        "--frames",
        "16",
        "--out",
        out,
        "--workers",
        "2",
    )
    assert res.returncode == 1
    assert sorted(p.name for p in out.glob("*.npz")) == ["good0.npz", "good1.npz"]
    assert "Traceback" not in res.stderr
    assert "3/5 inputs failed" in res.stderr
    listed = (out / "failures.txt").read_text()
    for b in bad:
        assert b.name in listed


def test_single_bad_file_is_one_line(media, tmp_path):
    root, _ = media
    res = run_script("codec_patchify.py", root / "notes.mp4", "--out", tmp_path / "x.npz")
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "notes.mp4" in lines[0], res.stderr
    res = run_script("codec_patchify.py", root / "notes.mp4", "--out", tmp_path / "x.npz", "--debug")
    assert res.returncode == 1 and "Traceback" in res.stderr


def test_truncated_file_keeps_what_decodes(media, tmp_path):
    root, _ = media
    res = run_script(
        "codec_patchify.py",
        root / "truncated.mp4",
        "--mode",
        "frames",
        "--input-size",
        "112",
        "--out",
        tmp_path / "t.npz",
    )
    # A file cut mid-stream either yields the frames that decode or one clear error line.
    assert res.returncode in (0, 1)
    if res.returncode == 1:
        assert "truncated.mp4" in res.stderr and "Traceback" not in res.stderr


def test_wrong_config_key(media, tmp_path):
    _, good = media
    res = run_script("codec_patchify.py", good[0], "--out", tmp_path / "x.npz", "--set", "select.budgt=3")
    assert res.returncode == 2
    assert "unknown config key 'select.budgt'" in res.stderr and "did you mean 'budget'" in res.stderr


def _gop_report(path: Path) -> tuple[list[str], str]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [PICT_TYPES.get(int(f.pict_type), "?") for f in c.decode(s)], s.codec_context.name


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_transcode_folder(media, tmp_path, codec):
    root, _ = media
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    make_clip(src / "sub" / "a.mp4", "mover", width=97, height=61, num_frames=40, gop=250, bframes=2, seed=3)
    (src / "broken.mp4").write_bytes(b"\x00" * 1000)
    dst = tmp_path / "dst"
    res = run_script("transcode.py", src, dst, "--codec", codec, "--gop", "8")
    assert res.returncode == 1
    assert "broken.mp4" in (dst / "failures.txt").read_text()
    types, name = _gop_report(dst / "sub" / "a.mp4")
    assert name == codec and len(types) == 40
    assert "B" not in types
    assert [i for i, t in enumerate(types) if t == "I"] == list(range(0, 40, 8))
    # second run skips what is done
    res = run_script("transcode.py", src, dst, "--codec", codec, "--gop", "8")
    assert "(1 already done)" in res.stderr


def test_budget_the_context_frame_uses_up_warns_or_fails_with_strict(media, tmp_path):
    _, good = media
    res = run_script("codec_patchify.py", good[0], "--budget", "256", "--out", tmp_path / "a.npz")
    assert res.returncode == 0
    warning = [x for x in res.stderr.splitlines() if x.startswith("warning:")]
    assert len(warning) == 1 and "budget 256 patches, the dense context frame takes 256" in warning[0]
    assert "no patch is left for motion" in warning[0]
    res = run_script("codec_patchify.py", good[0], "--budget", "300", "--strict", "--out", tmp_path / "b.npz")
    assert (
        res.returncode == 2 and "only 44 (15%) for motion" in res.stderr and not (tmp_path / "b.npz").exists()
    )
    res = run_script(
        "codec_patchify.py", good[0], "--budget", "200", "--input-size", "112", "--out", tmp_path / "c.npz"
    )
    assert res.returncode == 0 and "warning" not in res.stderr  # 64 context + 136 motion patches
    res = run_script("codec_patchify.py", good[0], "--budget", "100", "--out", tmp_path / "d.npz")
    assert res.returncode == 2 and "no patch is left for motion" in res.stderr  # every input would fail


def test_folders_expand_and_workers_are_checked(media, tmp_path):
    _, good = media
    folder = tmp_path / "in" / "sub"
    folder.mkdir(parents=True)
    for g in good[:2]:
        (folder / Path(g).name).write_bytes(Path(g).read_bytes())
    (folder / "notes.txt").write_text("not media")
    res = run_script(
        "codec_patchify.py",
        tmp_path / "in",
        "--budget",
        "0.2",
        "--input-size",
        "112",
        "--frames",
        "8",
        "--out",
        tmp_path / "o",
    )
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "o").glob("*.npz")) == sorted(
        Path(g).stem + ".npz" for g in good[:2]
    )
    for workers in ("0", "-1"):
        res = run_script("codec_patchify.py", good[0], "--workers", workers, "--out", tmp_path / "w.npz")
        assert res.returncode == 2 and "--workers must be >= 1" in res.stderr
