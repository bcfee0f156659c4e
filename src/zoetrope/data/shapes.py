"""The shapes world: an infinite, seeded, procedural text-to-video dataset.

Each clip is checkable from its pixels alone, so a critic can score generated videos against
their prompts. The exact specification:

- Background pure black (0, 0, 0). One object (optionally two, see below).
- Shapes: `circle`, `square`, `triangle`. The object is `size = max(2, round(min(H, W) / 4))`
  pixels across: circle diameter, square side, triangle base and height. The triangle is
  isosceles and upright: apex at the top centre, base at the bottom (base = height = size).
  Drawing is crisp (no antialiasing), so every object pixel has exactly the object's colour.
- Colours are pure saturated RGB, see `COLORS` (red, green, blue, yellow, magenta, cyan, white).
- Geometry: x runs right, y runs down, pixel (row i, column j) covers [j, j+1) x [i, i+1) and is
  inside a shape when its centre (j + 0.5, i + 0.5) is. An object's `centers[t] = (x, y)` is the
  centre of its size x size bounding box, which always lies fully inside the frame.
- Motion: constant speed along one axis in direction `left`, `right`, `up` or `down`, bouncing
  elastically off the walls (the position reflects). Speed is drawn uniformly in
  [extent / 32, extent / 16] pixels per frame (extent = width for left/right, height for up/down),
  at least 1 px/frame, but capped so the object cannot reach a wall within the first F steps,
  F = max(ceil(T / 4), min(ceil(T / 2), 8)); the start position along the axis is placed so that
  the stated direction holds, with no bounce, from frame 0 through frame F (the first half of a
  17-frame clip). The other coordinate is uniform and fixed.
- Caption: exactly `a {color} {shape} moving {direction}`. With two objects (different colours,
  started with non-overlapping boxes when possible) the captions join with ` and `:
  `a red circle moving left and a blue square moving up`; the second object is drawn on top.
- Any height, width and frame count (1 frame = an image). Everything derives from `seed`.

`ShapesWorld` is a torch IterableDataset yielding (frames uint8 torch (T, H, W, 3), caption)
forever; sample `index` of the stream is `ShapesWorld.sample(index)`, and workers and ranks take
disjoint interleaved indices, so a seed fixes the data seen by every process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from ..errors import UserError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "white": (255, 255, 255),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")

# Speed range as fractions of the frame extent per frame, and the steps guaranteed free of
# bounces. Measured on the demo recipe: at [1/24, 1/12] with no bounce only in the first quarter,
# a 17-frame clip bounced up to twice, a "left" clip spent about half its frames moving right,
# and the DiT learned the axis of motion but guessed its sign; at [1/48, 1/24] the motion was too
# small a part of the loss and the DiT drew nearly still objects. This middle speed with a clean
# first half keeps the motion large and its sign unambiguous, with at most one bounce.
SPEED_RANGE = (1 / 32, 1 / 16)
FREE_STEPS = 8  # no bounce before frame max(ceil(T / 4), min(ceil(T / 2), FREE_STEPS))


def free_steps(frames: int) -> int:
    """Steps from frame 0 during which the stated direction holds with no bounce."""
    return max(1, math.ceil(frames / 4), min(math.ceil(frames / 2), FREE_STEPS))


@dataclass
class ShapeObject:
    """One moving object of a shapes clip."""

    color: str
    shape: str
    direction: str
    size: int  # pixels across (diameter, side, or triangle base = height)
    centers: np.ndarray  # float (T, 2): bounding-box centre (x, y) per frame


@dataclass
class ShapesClip:
    """A rendered clip: frames uint8 (T, H, W, 3), its caption and the objects drawn."""

    frames: np.ndarray
    caption: str
    objects: list[ShapeObject]


def _check_choice(kind: str, value: str | None, valid) -> None:
    if value is not None and value not in valid:
        raise UserError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def bouncing_centers(rng: np.random.Generator, frames: int, height: int, width: int,
                     size: int, direction: str) -> np.ndarray:
    """Centres (T, 2) of a size-px box moving and bouncing as the module docstring specifies."""
    _check_choice("direction", direction, DIRECTIONS)
    horizontal = direction in ("left", "right")
    extent, across = (width, height) if horizontal else (height, width)
    lo, room = size / 2, extent - size  # centre moves in [lo, lo + room]
    free = free_steps(frames)  # steps with no bounce: frames 0..free
    speed = max(1.0, rng.uniform(*SPEED_RANGE) * extent)
    speed = min(speed, room / free)
    # Start far enough from the wall ahead that `free` steps do not reach it.
    offset = rng.uniform(0.0, 1.0) * (room - speed * free)
    sign = 1.0 if direction in ("right", "down") else -1.0
    start = offset if sign > 0 else room - offset  # relative to lo
    other = size / 2 + rng.uniform(0.0, 1.0) * (across - size)
    if room <= 0:
        along = np.full(frames, lo)
    else:
        # Elastic bounce = unfolding the straight path into a triangle wave of period 2 * room.
        q = np.mod(start + sign * speed * np.arange(frames), 2 * room)
        along = lo + np.where(q <= room, q, 2 * room - q)
    centers = np.stack([along, np.full(frames, other)] if horizontal else
                       [np.full(frames, other), along], axis=1)
    return centers.astype(np.float64)


def shape_mask(shape: str, cx: float, cy: float, size: int, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of a crisp `shape` whose size-px bounding box is centred at (cx, cy)."""
    _check_choice("shape", shape, SHAPES)
    px = np.arange(width)[None, :] + 0.5 - cx  # pixel centres relative to the object centre
    py = np.arange(height)[:, None] + 0.5 - cy
    half = size / 2
    # Half-open box [-half, half): exactly `size` rows and columns whatever the sub-pixel offset.
    in_box = (px >= -half) & (px < half) & (py >= -half) & (py < half)
    if shape == "square":
        return in_box
    if shape == "circle":
        return in_box & (px**2 + py**2 <= half**2)
    # Triangle, apex up: the half-width grows linearly from 0 at the top to `half` at the base.
    return in_box & (np.abs(px) <= (py + half) / 2)


def render_clip(frames: int, height: int, width: int, color: str | None = None,
                shape: str | None = None, direction: str | None = None, seed: int = 0,
                two_objects: bool = False) -> ShapesClip:
    """Render a shapes-world clip; unspecified attributes and a second object come from `seed`."""
    if frames < 1 or height < 2 or width < 2:
        raise UserError(f"need frames >= 1 and height, width >= 2; got {(frames, height, width)}")
    _check_choice("color", color, COLORS)
    _check_choice("shape", shape, SHAPES)
    _check_choice("direction", direction, DIRECTIONS)
    rng = np.random.default_rng(seed)
    size = min(height, width, max(2, round(min(height, width) / 4)))
    names = list(COLORS)
    first_color = color or names[rng.integers(len(names))]
    objects = [_draw_object(rng, frames, height, width, size, first_color, shape, direction)]
    if two_objects:
        others = [c for c in names if c != first_color]
        second_color = others[rng.integers(len(others))]
        # Best effort: redraw the second object until the two start without overlapping.
        for _ in range(100):
            second = _draw_object(rng, frames, height, width, size, second_color, None, None)
            gap = np.abs(second.centers[0] - objects[0].centers[0])
            if gap.max() >= size + 1:
                break
        objects.append(second)
    video = np.zeros((frames, height, width, 3), np.uint8)
    for obj in objects:
        rgb = np.array(COLORS[obj.color], np.uint8)
        for t, (cx, cy) in enumerate(obj.centers):
            video[t][shape_mask(obj.shape, cx, cy, size, height, width)] = rgb
    caption = " and ".join(f"a {o.color} {o.shape} moving {o.direction}" for o in objects)
    return ShapesClip(frames=video, caption=caption, objects=objects)


def _draw_object(rng: np.random.Generator, frames: int, height: int, width: int, size: int,
                 color: str, shape: str | None, direction: str | None) -> ShapeObject:
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    direction = direction or DIRECTIONS[rng.integers(len(DIRECTIONS))]
    centers = bouncing_centers(rng, frames, height, width, size, direction)
    return ShapeObject(color=color, shape=shape, direction=direction, size=size, centers=centers)


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def _shard() -> tuple[int, int]:
    """(this process's shard, number of shards) over distributed ranks x dataloader workers."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world * workers


class ProceduralWorld(IterableDataset):
    """An infinite stream of (frames uint8 torch (T, H, W, 3), caption) from `sample(index)`.

    Shard s of n (ranks x workers) yields indices s, s + n, s + 2n, ...: disjoint across
    processes and fixed by `seed`, so a run's data does not depend on scheduling.
    """

    def __init__(self, sizes: list[tuple[int, int, int]] | None = None, seed: int = 0) -> None:
        self.sizes = [tuple(int(v) for v in s) for s in (sizes or [(17, 64, 64)])]
        for s in self.sizes:
            if len(s) != 3:
                raise UserError(f"sizes must be (frames, height, width) triples, got {s}")
        self.seed = seed

    def _rng(self, index: int) -> tuple[np.random.Generator, tuple[int, int, int]]:
        """The per-sample generator (seeded by (seed, index)) and the size it draws."""
        rng = np.random.default_rng([self.seed, index])
        return rng, self.sizes[rng.integers(len(self.sizes))]

    def sample(self, index: int) -> tuple[torch.Tensor, str]:
        """Sample `index` of the stream (deterministic)."""
        raise NotImplementedError

    def __iter__(self):
        shard, shards = _shard()
        index = shard
        while True:
            yield self.sample(index)
            index += shards


class ShapesWorld(ProceduralWorld):
    """The shapes world as an infinite dataset; with `two_objects`, half the clips have two."""

    def __init__(self, sizes: list[tuple[int, int, int]] | None = None, seed: int = 0,
                 two_objects: bool = False) -> None:
        super().__init__(sizes, seed)
        self.two_objects = two_objects

    def clip(self, index: int) -> ShapesClip:
        """The full `ShapesClip` (with object tracks) behind sample `index`."""
        rng, (t, h, w) = self._rng(index)
        two = self.two_objects and bool(rng.integers(2))
        return render_clip(t, h, w, seed=int(rng.integers(2**63)), two_objects=two)

    def sample(self, index: int) -> tuple[torch.Tensor, str]:
        """Sample `index` of the stream (deterministic): (frames uint8 (T, H, W, 3), caption)."""
        clip = self.clip(index)
        return torch.from_numpy(clip.frames), clip.caption
