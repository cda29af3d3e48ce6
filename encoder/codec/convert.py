"""Decoded PyAV frames → RGB or luma arrays at the output size: aspect policy and display rotation."""

from __future__ import annotations

import numpy as np

from encoder.codec.motion import Geometry
from encoder.codec.sizing import native_size


def display_rotation_cw(frame) -> int:
    """Clockwise display rotation in degrees (0/90/180/270) from the frame's display matrix."""
    ccw = getattr(frame, "rotation", 0) or 0
    return int(round(-ccw / 90)) % 4 * 90


class FrameConverter:
    """Frame → RGB [S, S, 3] with the aspect policy and rotation (geometry cached per frame shape); with
    aspect "native", [H, W, 3] sized by ``native`` = (max_cells, cell) from the first frame, later frames
    of another shape resized to the same H × W."""

    def __init__(self, size: int, aspect: str, native: tuple[int, int] = (0, 0)) -> None:
        self.size, self.aspect, self.native = size, aspect, native
        self._out: tuple[int, int] | None = None
        self._cache: dict[tuple[int, int, int], Geometry] = {}

    def geometry(self, frame) -> Geometry:
        key = (frame.height, frame.width, display_rotation_cw(frame))
        if key not in self._cache:
            if self.aspect == "native":
                if self._out is None:  # (H, W) as displayed
                    h, w = (key[1], key[0]) if key[2] in (90, 270) else key[:2]
                    self._out = native_size(h, w, *self.native)
                self._cache[key] = Geometry.make(key[0], key[1], self._out, "resize", key[2])
            else:
                self._cache[key] = Geometry.make(key[0], key[1], self.size, self.aspect, key[2])
        return self._cache[key]

    def convert(self, frame, fmt: str = "rgb24") -> np.ndarray:
        """RGB [S, S, 3] ("rgb24") or full-range luma [S, S] ("gray") of `frame`, swscale-resized."""
        g = self.geometry(frame)
        return g.place(frame.to_ndarray(width=g.scaled_w, height=g.scaled_h, format=fmt))


__all__ = ["FrameConverter", "display_rotation_cw"]
