"""The one output type of every input mode: a budgeted set of patches with 3D positions."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TEMPORAL_GRID = 64  # t of every patch lives on a 64-frame virtual grid


def virtual_t(num_frames: int, grid: int = TEMPORAL_GRID) -> np.ndarray:
    """t on the virtual grid of each of ``num_frames`` sampled frames: floor(linspace(0, grid-1, n))."""
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if num_frames == 1:
        return np.zeros(1, dtype=np.int32)
    return np.floor(np.linspace(0, grid - 1, num_frames)).astype(np.int32)


@dataclass
class PatchSelection:
    """Selected patches of one clip or image.

    positions: int32 [K, 3] (t, h, w), t on the 64-frame grid, sorted by (t, h, w).
    pixels:    uint8 [K, 3, p, p] RGB patch pixels, channels first.
    scores:    float32 [K] saliency of each patch (1.0 for modes without scores).
    frame_ids: int64 [T] source-video frame index of each sampled frame (0 for still images).
    frame_t:   int32 [T] virtual-grid t of each sampled frame.
    patch_size: p.  grid_hw: (patches per column, patches per row) of one frame.
    meta: JSON-serialisable facts (path, mode, motion source, codec, timestamps, ...).
    """

    positions: np.ndarray
    pixels: np.ndarray
    scores: np.ndarray
    frame_ids: np.ndarray
    frame_t: np.ndarray
    patch_size: int
    grid_hw: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.int32)
        self.pixels = np.asarray(self.pixels, dtype=np.uint8)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.frame_ids = np.asarray(self.frame_ids, dtype=np.int64)
        self.frame_t = np.asarray(self.frame_t, dtype=np.int32)
        self.patch_size = int(self.patch_size)
        self.grid_hw = (int(self.grid_hw[0]), int(self.grid_hw[1]))
        self.validate()

    def validate(self) -> None:
        k, p = len(self.positions), self.patch_size
        if self.positions.ndim != 2 or self.positions.shape[1] != 3:
            raise ValueError(f"positions must be [K, 3], got {self.positions.shape}")
        if self.pixels.shape != (k, 3, p, p):
            raise ValueError(f"pixels must be [K={k}, 3, {p}, {p}], got {self.pixels.shape}")
        if self.scores.shape != (k,):
            raise ValueError(f"scores must be [K={k}], got {self.scores.shape}")
        if self.frame_ids.shape != self.frame_t.shape:
            raise ValueError(f"frame_ids {self.frame_ids.shape} and frame_t {self.frame_t.shape} differ")
        if k and (self.positions.min(axis=0) < 0).any():
            raise ValueError("positions must be non-negative")
        if k and self.positions[:, 0].max() >= TEMPORAL_GRID:
            raise ValueError(f"t must be < {TEMPORAL_GRID}, got {self.positions[:, 0].max()}")

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def num_frames(self) -> int:
        return len(self.frame_ids)

    @property
    def dense_tokens(self) -> int:
        """Token count of the same sampled frames kept dense."""
        return self.num_frames * self.grid_hw[0] * self.grid_hw[1]

    # ---- serialisation -------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "positions": self.positions,
            "pixels": self.pixels,
            "scores": self.scores,
            "frame_ids": self.frame_ids,
            "frame_t": self.frame_t,
            "patch_size": np.asarray(self.patch_size, dtype=np.int32),
            "grid_hw": np.asarray(self.grid_hw, dtype=np.int32),
            "meta_json": np.asarray(json.dumps(self.meta, default=_json_default)),
        }

    @classmethod
    def from_arrays(cls, arrays: Any) -> PatchSelection:
        missing = {"positions", "pixels", "frame_ids"} - set(arrays.keys())
        if missing:
            raise ValueError(f"not a patch-selection archive: missing {sorted(missing)}")
        positions = arrays["positions"]
        pixels = arrays["pixels"]
        frame_ids = arrays["frame_ids"]
        patch = int(arrays["patch_size"]) if "patch_size" in arrays else pixels.shape[-1]
        return cls(
            positions=positions,
            pixels=pixels,
            scores=arrays["scores"] if "scores" in arrays else np.ones(len(positions), np.float32),
            frame_ids=frame_ids,
            frame_t=arrays["frame_t"] if "frame_t" in arrays else virtual_t(len(frame_ids)),
            patch_size=patch,
            grid_hw=tuple(arrays["grid_hw"]) if "grid_hw" in arrays else (0, 0),
            meta=json.loads(str(arrays["meta_json"])) if "meta_json" in arrays else {},
        )

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (compressed); returns the path written."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> PatchSelection:
        with np.load(path, allow_pickle=False) as z:
            return cls.from_arrays(z)

    def to_bytes(self) -> bytes:
        """npz bytes: the value of a webdataset ``.npz`` field."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.to_arrays())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PatchSelection:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls.from_arrays(z)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
