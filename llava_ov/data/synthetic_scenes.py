"""Scenes of the synthetic motion-QA set: shapes on a textured background, rendered to frames.

Every scene is a list of :class:`SceneObject` (shape, colour, per-frame top-left position and
visibility) over a random muted texture. Objects are saturated colours with a dark outline, so they
stand out from any background. :func:`build_scene` creates the scene for a question type and answer;
:func:`render` draws it. All randomness comes from the ``rng`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 185, 55),
    "blue": (40, 80, 235),
    "yellow": (240, 210, 30),
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
COUNTS = ("one", "two", "three")
OUTLINE = (15, 15, 15)


@dataclass
class SceneObject:
    shape: str
    color: str
    x: np.ndarray  # int64 [N] top-left column per frame
    y: np.ndarray  # int64 [N] top-left row per frame
    visible: np.ndarray  # bool [N]
    side: int  # box side in pixels
    role: str = "object"

    def to_json(self) -> dict:
        return {
            "shape": self.shape,
            "color": self.color,
            "role": self.role,
            "side": self.side,
            "x": self.x.tolist(),
            "y": self.y.tolist(),
            "visible": self.visible.astype(int).tolist(),
        }


@dataclass(frozen=True)
class SceneParams:
    size: int = 112  # square frame side (pixels)
    num_frames: int = 16
    object_size: float = 0.22  # object side as a fraction of the frame side
    travel: float = 0.45  # distance a mover covers, as a fraction of the free range (<= 0.5)

    @property
    def obj(self) -> int:
        return max(6, int(round(self.object_size * self.size)))


# ----------------------------------------------------------------------------- drawing


def shape_mask(shape: str, s: int) -> np.ndarray:
    """bool [s, s] mask of a shape filling an s x s box."""
    yy, xx = np.mgrid[:s, :s].astype(np.float32) + 0.5
    c = s / 2.0
    if shape == "square":
        return np.ones((s, s), dtype=bool)
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= c**2
    if shape == "triangle":  # apex up, base at the bottom row
        return np.abs(xx - c) <= yy / 2.0
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random muted texture (blocks, stripes, checker or blotches) with fine noise; uint8 [S, S, 3]."""
    base = rng.integers(75, 165) + rng.integers(-18, 19, size=3)
    amp = int(rng.integers(15, 35))
    kind = int(rng.integers(0, 4))
    yy, xx = np.mgrid[:size, :size]
    if kind == 0:  # blocks
        cell = int(rng.integers(4, 12))
        coarse = rng.integers(-amp, amp + 1, size=(-(-size // cell), -(-size // cell), 1))
        pattern = np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:size, :size]
    elif kind == 1:  # stripes, random angle and period
        ang, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
        pattern = (amp * np.sign(np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period)))[
            ..., None
        ]
    elif kind == 2:  # checker
        cell = int(rng.integers(5, 16))
        pattern = (((yy // cell + xx // cell) % 2) * 2 * amp - amp)[..., None]
    else:  # smooth blotches
        coarse = rng.uniform(-amp, amp, size=(5, 5, 3))
        idx = np.minimum((np.arange(size) * 5) // size, 4)
        pattern = coarse[idx][:, idx]
    tint = rng.uniform(0.7, 1.0, size=3)
    img = base[None, None, :] + pattern * tint + rng.integers(-8, 9, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def render(objects: list[SceneObject], bg: np.ndarray, num_frames: int) -> np.ndarray:
    """Draw the objects (in list order, later on top) over ``bg``: uint8 [N, S, S, 3]."""
    frames = np.repeat(bg[None], num_frames, axis=0)
    for ob in objects:
        _draw(frames, ob)
    return frames


def _draw(frames: np.ndarray, ob: SceneObject) -> None:
    size, side = frames.shape[1], ob.side
    outer = shape_mask(ob.shape, side)
    inner = np.zeros_like(outer)
    inner[2:-2, 2:-2] = shape_mask(ob.shape, side - 4)
    for t in np.flatnonzero(ob.visible):
        x, y = int(ob.x[t]), int(ob.y[t])
        if x < 0 or y < 0 or x + side > size or y + side > size:
            raise ValueError(f"object outside the frame at t={t}: ({x}, {y}) side {side}")
        patch = frames[t, y : y + side, x : x + side]
        patch[outer] = OUTLINE
        patch[inner] = COLORS[ob.color]


# ----------------------------------------------------------------------------- layouts


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]], gap: int) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in others)


def _swept(ob: SceneObject) -> tuple[int, int, int, int]:
    """Bounding box of everything the object covers over the clip."""
    xs, ys = ob.x[ob.visible], ob.y[ob.visible]
    return int(xs.min()), int(ys.min()), int(xs.max()) + ob.side, int(ys.max()) + ob.side


def static_object(
    rng, p: SceneParams, shape: str, color: str, avoid: list[SceneObject], role: str
) -> SceneObject:
    """A still object placed away from the boxes ``avoid`` cover (best effort after 100 tries)."""
    hi, s = p.size - p.obj, p.obj
    boxes = [_swept(o) for o in avoid]
    for _ in range(100):
        x, y = int(rng.integers(0, hi + 1)), int(rng.integers(0, hi + 1))
        if not _overlaps((x, y, x + s, y + s), boxes, gap=2):
            break
    n = p.num_frames
    return SceneObject(shape, color, np.full(n, x), np.full(n, y), np.ones(n, bool), s, role)


def _mover(rng, p: SceneParams, shape: str, color: str, direction: str) -> SceneObject:
    """An object crossing ``travel`` of the free range in ``direction`` at constant speed.

    Its first position is drawn from the stretch where a move of that length fits either way, so
    frame 0 alone says nothing about the direction (the answer needs the motion)."""
    n, hi = p.num_frames, p.size - p.obj
    dist = max(n - 1, int(round(p.travel * hi)))
    if 2 * dist > hi:
        raise ValueError(
            f"travel {p.travel} is too long for a direction-neutral start ({dist} px of {hi} free)"
        )
    dx, dy = DIRECTIONS[direction]
    along = np.round(np.linspace(0, dist, n)).astype(np.int64)
    first = int(rng.integers(dist, hi - dist + 1))
    across = np.full(n, int(rng.integers(0, hi + 1)))
    line = first + along if (dx + dy) > 0 else first - along
    x, y = (line, across) if dx else (across, line)
    return SceneObject(shape, color, x, y, np.ones(n, bool), p.obj, "mover")


def _other(rng, options, exclude: str) -> str:
    return str(rng.choice([o for o in options if o != exclude]))


def _maybe_distractor(rng, p: SceneParams, subject: SceneObject, color: str) -> list[SceneObject]:
    """``[subject]``, half the time with a static distractor before it: a random shape in a colour other
    than ``color``."""
    objs = [subject]
    if rng.random() < 0.5:
        objs.insert(
            0, static_object(rng, p, str(rng.choice(SHAPES)), _other(rng, COLORS, color), objs, "distractor")
        )
    return objs


def blink_slots(num_frames: int) -> list[tuple[int, int]]:
    """Three well-separated [start, end) windows where a blinking object is hidden."""
    n, off = num_frames, max(1, num_frames // 8)
    centers = [1 + (j + 0.5) * (n - 2) / 3 for j in range(3)]
    return [(int(round(c - off / 2)), int(round(c - off / 2)) + off) for c in centers]


def build_scene(
    qtype: str, answer: str, rng: np.random.Generator, p: SceneParams
) -> tuple[list[SceneObject], dict]:
    """Objects for one question type with the given answer, plus the question's slots."""
    color, shape = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
    n = p.num_frames
    if qtype == "direction":
        mover = _mover(rng, p, shape, color, answer)
        return _maybe_distractor(rng, p, mover, color), {"color": color, "shape": shape}
    if qtype == "which_moved":
        mover = _mover(rng, p, shape, answer, str(rng.choice(list(DIRECTIONS))))
        still = static_object(
            rng, p, str(rng.choice(SHAPES)), _other(rng, COLORS, answer), [mover], "distractor"
        )
        return [still, mover], {}
    if qtype == "appeared":
        still = static_object(
            rng, p, _other(rng, SHAPES, answer), str(rng.choice(list(COLORS))), [], "distractor"
        )
        brief = static_object(rng, p, answer, str(rng.choice(list(COLORS))), [still], "brief")
        length = max(2, int(round(n / 5)))
        first = int(rng.integers(max(1, n // 4), max(max(1, n // 4), n - length - n // 4) + 1))
        brief.visible[:] = False
        brief.visible[first : first + length] = True
        return [still, brief], {}
    if qtype == "count":
        k = COUNTS.index(answer) + 1
        blinker = static_object(rng, p, shape, color, [], "blinker")
        for j in sorted(rng.choice(3, size=k, replace=False)):
            a, b = blink_slots(n)[j]
            blinker.visible[a:b] = False
        return _maybe_distractor(rng, p, blinker, color), {"color": color, "shape": shape}
    if qtype == "color":
        target = (
            _mover(rng, p, shape, answer, str(rng.choice(list(DIRECTIONS))))
            if rng.random() < 0.5
            else static_object(rng, p, shape, answer, [], "target")
        )
        target.role = "target"
        objs = [target]
        if rng.random() < 0.6:
            objs.insert(
                0,
                static_object(
                    rng, p, _other(rng, SHAPES, shape), _other(rng, COLORS, answer), objs, "distractor"
                ),
            )
        return objs, {"shape": shape}
    raise ValueError(f"unknown question type {qtype!r}")
