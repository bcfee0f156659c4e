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
- Generalization splits move the world off these ranges on purpose: `speed_range` replaces the
  speed range (still capped by the free steps), `scale` sets the object size to
  round(scale x min(H, W)) instead of 1/4 of it, and `ShapesWorld(holdout=...)` never shows
  the held-out (color, shape, direction) combinations ("*" matches any value): a clip that
  would is drawn again from the same generator.
- Continuing clips (`render_clip(skip=k)`, `ShapesWorld(continuing=p)`): the window starts k
  frames into the motion drawn for a T-frame clip, so the object may be anywhere on its path and
  moving either way along its axis. Such a clip is what a long clip's later windows continue; in
  `ShapesWorld` its caption is empty, or with `continuing_caption = "undirected"` the caption
  without its directions, `a red circle` (the stated direction is the motion's at frame -k, not
  the window's), or with `"moving"` the caption with each object's direction over the window's
  first step, frame 0 to 1 (as a fresh clip's caption states it; a one-frame window keeps the
  drawn one); k is drawn uniformly in 1..CONTINUING_SKIP, more than a round trip at the world's
  slowest speed.

Two opt-in options (off, every render is byte-identical to the world above; both need frames of
at least MIN_SIDE = 8 px a side). Their draws replace the second-object draws above, so a seed
gives another clip with them on.

- `collide` (needs `two_objects`): the two objects bounce off each other. State: box centres p
  and velocities v (px/frame) of both; the open size x size boxes overlap when |dx| < size and
  |dy| < size, and never do. Stepping is event-driven in exact rational arithmetic (Python
  Fractions from the float64 draws; centres rounded to float64 per frame): within each frame
  the earliest event is applied, then the next: a box reaching a wall (its centre at size / 2 or
  extent - size / 2) reverses that velocity component; the boxes meeting (the first time both
  |dx| < size and |dy| < size would hold, while closing) swap the velocity components along the
  contact axis (the axis or axes that were still separated; a corner swaps both), which is the
  elastic collision of equal masses. Simultaneous events go one at a time: walls first (object
  1 then 2, x then y), then the contact. So boxes touch but never overlap, and no pixel is in
  both. The second object is drawn as above but redrawn (up to TRIES times) until the boxes
  start >= size + 1 apart on some axis and no contact happens before frame F, so the caption's
  directions hold from frame 0 through frame F; after a collision an object may stop or move
  diagonally. With probability AIM_SHARE the first TRIES / 2 draws are aimed (the second
  object's path put through the first one's centre at a time drawn in [F, T - 1]; see `_aim`)
  and kept only if they collide. About half the clips collide: 52% at 17x64x64, 56% at
  17x48x80, 57% at 33x64x64 (share of the first 200 seeds with a contact).
- `occluder`: a gray bar, colour OCCLUDER_RGB (128, 128, 128), `size + size // 2` px thick,
  spanning the frame across the first object's axis of motion (vertical for left/right),
  fixed, drawn in front of every object. Its first row/column is drawn uniformly from those
  leaving CLEARANCE = 2 px of background between the bar and each object's box in frames 0 and
  1 (the first object, with the bar, is redrawn until one exists; the second object redrawn
  until it is clear too). With `collide` too, no contact happens within CONTACT_GAP = 2 frames
  of a frame where an object's box (grown by CLEARANCE) reaches the bar, so collisions are seen
  (this makes collisions rare there: 0.5% at 17x64x64, 9% at 17x48x80, 17% at 33x64x64).
  Caption: the object captions, then exactly ` behind a gray bar`:
  `a red circle moving left and a blue square moving up behind a gray bar`.

`ShapesWorld` is a torch IterableDataset yielding (frames uint8 torch (T, H, W, 3), caption)
forever; sample `index` of the stream is `ShapesWorld.sample(index)`, and workers and ranks take
disjoint interleaved indices, so a seed fixes the data seen by every process.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

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
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}  # a bounce's turn

# Speed range as fractions of the frame extent per frame, and the steps guaranteed free of
# bounces. Measured on the demo recipe: at [1/24, 1/12] with no bounce only in the first quarter,
# a 17-frame clip bounced up to twice, a "left" clip spent about half its frames moving right,
# and the DiT learned the axis of motion but guessed its sign; at [1/48, 1/24] the motion was too
# small a part of the loss and the DiT drew nearly still objects. This middle speed with a clean
# first half keeps the motion large and its sign unambiguous, with at most one bounce.
SPEED_RANGE = (1 / 32, 1 / 16)
FREE_STEPS = 8  # no bounce before frame max(ceil(T / 4), min(ceil(T / 2), FREE_STEPS))

OCCLUDER_RGB = (128, 128, 128)  # the occluder's gray: no object colour, and mid-bright
OCCLUDER_SUFFIX = " behind a gray bar"  # caption suffix of a clip with an occluder
MIN_SIDE = 8  # collide / occluder need frames this large (two objects or a bar fit beside one)
AIM_SHARE = 0.5  # with `collide`, this share of two-object clips aims the second object
TRIES = 100  # draws tried before giving up on a constraint
CLEARANCE = 2  # px of background between the bar and each object box in frames 0 and 1
CONTACT_GAP = 2  # frames: collisions happen this far from any frame with an object at the bar
CONTINUING_SKIP = 64  # continuing clips start 1..64 frames into their motion
CONTINUING_CAPTIONS = ("empty", "undirected", "moving")  # a continuing clip's caption


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
    occluder: Occluder | None = None  # the gray bar, with `occluder`
    contacts: list[float] = field(default_factory=list)  # times (frames) of collisions


def _check_choice(kind: str, value: str | None, valid) -> None:
    if value is not None and value not in valid:
        raise UserError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def undirected(caption: str) -> str:
    """A caption without its objects' directions: `a red circle moving left and a blue square
    moving up` -> `a red circle and a blue square` (the occluder suffix stays)."""
    return re.sub(r" moving (?:%s)\b" % "|".join(DIRECTIONS), "", caption)


def bouncing_centers(rng: np.random.Generator, frames: int, height: int, width: int,
                     size: int, direction: str,
                     speed_range: tuple[float, float] = SPEED_RANGE, skip: int = 0) -> np.ndarray:
    """Centres (T, 2) of a size-px box moving and bouncing as the module docstring specifies,
    from `skip` frames into the motion drawn for a T-frame clip."""
    motion = _draw_motion(rng, frames, height, width, size, direction, speed_range)
    return _centers(motion, frames + skip)[skip:]


@dataclass
class _Motion:
    """The draws behind one object's motion: the centre at frame 0 is lo + start along the axis
    and `other` across it, the velocity `sign * speed` along the axis."""

    horizontal: bool
    lo: float  # size / 2: the lowest centre coordinate
    room: float  # extent - size: the centre moves in [lo, lo + room]
    start: float  # relative to lo
    sign: float  # +1 right/down, -1 left/up
    speed: float  # px/frame
    other: float  # the fixed coordinate across the axis

    def start_center(self) -> tuple[float, float]:
        along = self.lo + self.start
        return (along, self.other) if self.horizontal else (self.other, along)

    def velocity(self) -> tuple[float, float]:
        v = self.sign * self.speed if self.room > 0 else 0.0
        return (v, 0.0) if self.horizontal else (0.0, v)


def _draw_motion(rng: np.random.Generator, frames: int, height: int, width: int, size: int,
                 direction: str, speed_range: tuple[float, float] = SPEED_RANGE) -> _Motion:
    """Draw speed, start and the fixed coordinate as the module docstring specifies."""
    _check_choice("direction", direction, DIRECTIONS)
    horizontal = direction in ("left", "right")
    extent, across = (width, height) if horizontal else (height, width)
    lo, room = size / 2, extent - size  # centre moves in [lo, lo + room]
    free = free_steps(frames)  # steps with no bounce: frames 0..free
    speed = max(1.0, rng.uniform(*speed_range) * extent)
    speed = min(speed, room / free)
    # Start far enough from the wall ahead that `free` steps do not reach it.
    offset = rng.uniform(0.0, 1.0) * (room - speed * free)
    sign = 1.0 if direction in ("right", "down") else -1.0
    start = offset if sign > 0 else room - offset  # relative to lo
    other = size / 2 + rng.uniform(0.0, 1.0) * (across - size)
    return _Motion(horizontal, lo, room, start, sign, speed, other)


def _centers(m: _Motion, frames: int) -> np.ndarray:
    """Centres (T, 2) of a motion bouncing off the walls only (no other object)."""
    horizontal, lo, room, start, sign, speed, other = (
        m.horizontal, m.lo, m.room, m.start, m.sign, m.speed, m.other)
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
                two_objects: bool = False, collide: bool = False,
                occluder: bool = False, speed_range: tuple[float, float] = SPEED_RANGE,
                scale: float | None = None, skip: int = 0) -> ShapesClip:
    """Render a shapes-world clip; unspecified attributes and a second object come from `seed`.

    `collide` (needs `two_objects`) makes the two objects bounce off each other; `occluder` adds a
    gray bar in front of them. Both are specified in the module docstring. `speed_range` (shares
    of the extent per frame) and `scale` (object size over the shorter side; None: the world's
    1/4) move the world off its laws' usual ranges: generalization splits. `skip` > 0 starts the
    clip that many frames into its motion (a continuing clip; one or two objects without
    `collide` or `occluder`); the caption still states the direction at the motion's start."""
    if frames < 1 or height < 2 or width < 2:
        raise UserError(f"need frames >= 1 and height, width >= 2; got {(frames, height, width)}")
    _check_choice("color", color, COLORS)
    _check_choice("shape", shape, SHAPES)
    _check_choice("direction", direction, DIRECTIONS)
    if collide and not two_objects:
        raise UserError("collide needs two_objects (a collision takes two objects)")
    if skip < 0 or (skip and (collide or occluder)):
        raise UserError(f"skip must be >= 0, and 0 with collide or occluder; got {skip}")
    if (collide or occluder) and min(height, width) < MIN_SIDE:
        raise UserError(f"collide and occluder need frames of at least {MIN_SIDE} px a side; "
                        f"got {height}x{width}")
    lo, hi = speed_range
    if not 0 < lo <= hi or (scale is not None and not 0 < scale <= 1):
        raise UserError(f"need 0 < speed_range[0] <= speed_range[1] and scale in (0, 1]; got "
                        f"{tuple(speed_range)} and {scale}")
    rng = np.random.default_rng(seed)
    size = min(height, width, max(2, round(min(height, width) / 4) if scale is None
                                  else round(min(height, width) * scale)))
    names = list(COLORS)
    first_color = color or names[rng.integers(len(names))]
    bar, contacts = None, []
    if collide or occluder:
        objects, bar, contacts = _draw_scene(rng, frames, height, width, size, first_color, shape,
                                             direction, two_objects, collide, occluder,
                                             speed_range)
    else:
        objects = [_draw_object(rng, frames, height, width, size, first_color, shape, direction,
                                speed_range, skip)]
    if two_objects and not (collide or occluder):
        others = [c for c in names if c != first_color]
        second_color = others[rng.integers(len(others))]
        # Best effort: redraw the second object until the two start without overlapping.
        for _ in range(100):
            second = _draw_object(rng, frames, height, width, size, second_color, None, None,
                                  speed_range, skip)
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
    if bar is not None:
        video[:, bar.mask(height, width)] = np.array(OCCLUDER_RGB, np.uint8)  # in front of all
        caption += OCCLUDER_SUFFIX
    return ShapesClip(frames=video, caption=caption, objects=objects, occluder=bar,
                      contacts=contacts)


def moving_caption(clip: ShapesClip) -> str:
    """The caption of `clip` (without collide or occluder) with each object's direction the one
    it moves in over frames 0 to 1 (the drawn one where the clip has one frame, or it stands)."""
    def now(o: ShapeObject) -> str:
        if len(o.centers) < 2:
            return o.direction
        axis = 0 if o.direction in ("left", "right") else 1
        sign = 1.0 if o.direction in ("right", "down") else -1.0
        back = (o.centers[1, axis] - o.centers[0, axis]) * sign < 0  # turned since the draw
        return OPPOSITE[o.direction] if back else o.direction

    return " and ".join(f"a {o.color} {o.shape} moving {now(o)}" for o in clip.objects)


def _draw_object(rng: np.random.Generator, frames: int, height: int, width: int, size: int,
                 color: str, shape: str | None, direction: str | None,
                 speed_range: tuple[float, float] = SPEED_RANGE, skip: int = 0) -> ShapeObject:
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    direction = direction or DIRECTIONS[rng.integers(len(DIRECTIONS))]
    centers = bouncing_centers(rng, frames, height, width, size, direction, speed_range, skip)
    return ShapeObject(color=color, shape=shape, direction=direction, size=size, centers=centers)


# --------------------------------------------------------------------------------------------
# Collisions and the occluder (opt-in; see the module docstring)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Occluder:
    """A gray bar spanning the frame: rows [start, start + thickness) when horizontal, else
    columns; drawn in front of every object."""

    horizontal: bool
    start: int
    thickness: int

    def mask(self, height: int, width: int) -> np.ndarray:
        """Boolean (H, W) mask of the bar's pixels."""
        m = np.zeros((height, width), bool)
        if self.horizontal:
            m[self.start:self.start + self.thickness] = True
        else:
            m[:, self.start:self.start + self.thickness] = True
        return m

    def near(self, center: tuple[float, float], size: int, margin: int) -> bool:
        """Whether a size-px box at `center`, grown by `margin` px, reaches the bar's pixels."""
        lo, hi = _pixel_span(center[1] if self.horizontal else center[0], size)
        return lo - margin < self.start + self.thickness and self.start < hi + margin


def bar_thickness(size: int) -> int:
    """The occluder's thickness for objects of `size` px: 1.5 x wider, so it can hide one."""
    return size + size // 2


def _pixel_span(c: float, size: int) -> tuple[int, int]:
    """Pixel indices [lo, hi) whose centres lie in the box [c - size / 2, c + size / 2)."""
    return math.ceil(c - size / 2 - 0.5), math.ceil(c + size / 2 - 0.5)


def _motion_at(m: _Motion, t: float) -> tuple[float, float]:
    """The wall-bouncing centre of motion `m` at (fractional) time t, as `_centers` computes it."""
    if m.room <= 0:
        along = m.lo
    else:
        q = (m.start + m.sign * m.speed * t) % (2 * m.room)
        along = m.lo + (q if q <= m.room else 2 * m.room - q)
    return (along, m.other) if m.horizontal else (m.other, along)


def _aim(rng: np.random.Generator, first: _Motion, second: _Motion, frames: int) -> None:
    """Put the second object on a path through the first one's centre at a drawn time tau in
    [F, T - 1]: its fixed coordinate is set, and its start too where a start that reaches the
    point at tau without breaking the free steps exists (the one nearest the drawn start)."""
    free = free_steps(frames)
    tau = rng.uniform(free, max(free, frames - 1))
    point = _motion_at(first, tau)
    across, along = (point[1], point[0]) if second.horizontal else (point[0], point[1])
    second.other = across
    if second.room <= 0:
        return
    a, period, room = along - second.lo, 2 * second.room, second.room
    lo, hi = (0.0, room - second.speed * free) if second.sign > 0 else (second.speed * free, room)
    starts = [u + period * k - second.sign * second.speed * tau
              for u in (a, period - a) for k in range(-2 - int(tau * second.speed / period), 3)]
    starts = [s for s in starts if lo <= s <= hi]
    if starts:
        second.start = min(starts, key=lambda s: abs(s - second.start))


def simulate(starts: list[tuple[float, float]], velocities: list[tuple[float, float]],
             frames: int, height: int, width: int, size: int
             ) -> tuple[list[np.ndarray], list[float]]:
    """Centres (T, 2) of size-px boxes bouncing off the walls and off each other, and the contact
    times (in frames). Event-driven in exact rational arithmetic, as the module docstring says."""
    half = Fraction(size, 2)
    lo, hi = (half, half), (width - half, height - half)
    p = [[Fraction(c) for c in s] for s in starts]
    v = [[Fraction(c) for c in u] for u in velocities]
    out = [[tuple(map(float, q))] for q in p]
    contacts: list[float] = []
    now = Fraction(0)
    for frame in range(1, frames):
        for _ in range(10_000):  # a handful of events per frame; the cap only guards the loop
            left = frame - now
            events = [((hi[i] - p[k][i]) / v[k][i] if v[k][i] > 0 else (lo[i] - p[k][i]) / v[k][i],
                       k, i) for k in range(len(p)) for i in (0, 1) if v[k][i] != 0]
            events = [e for e in events if e[0] <= left]
            hit = _contact(p, v, size) if len(p) == 2 else None
            if hit is not None and hit[0] <= left and all(hit[0] < e[0] for e in events):
                events = [hit]
            if not events:
                p = [[c + u * left for c, u in zip(q, w)] for q, w in zip(p, v)]
                now = Fraction(frame)
                break
            dt = min(e[0] for e in events)
            event = next(e for e in events if e[0] == dt)  # walls first, in object, x, y order
            p = [[c + u * dt for c, u in zip(q, w)] for q, w in zip(p, v)]
            now += dt
            if event[1] == "contact":
                for i in event[2]:  # equal masses: swap the velocity components along the axis
                    v[0][i], v[1][i] = v[1][i], v[0][i]
                contacts.append(float(now))
            else:
                k, i = event[1], event[2]
                p[k][i] = hi[i] if v[k][i] > 0 else lo[i]  # exactly at the wall already
                v[k][i] = -v[k][i]
        else:
            raise RuntimeError("collision simulation did not settle")  # unreachable in practice
        for track, q in zip(out, p):
            track.append(tuple(map(float, q)))
    return [np.array(track, np.float64) for track in out], contacts


def _contact(p, v, size: int):
    """(time, "contact", axes) of the two boxes' next contact while approaching, or None.

    The open boxes overlap when |dx| < size and |dy| < size; contact is the first time both hold,
    on the axes that were separated until then (both at a corner)."""
    d = [b - a for a, b in zip(p[0], p[1])]
    u = [b - a for a, b in zip(v[0], v[1])]
    enter, leave = [], []
    for i in (0, 1):
        if abs(d[i]) < size:  # overlapping along this axis now
            enter.append(None)
            leave.append(None if u[i] == 0 else ((size - d[i]) / u[i] if u[i] > 0
                                                 else (size + d[i]) / -u[i]))
        elif d[i] * u[i] < 0:  # separated and closing
            enter.append((abs(d[i]) - size) / abs(u[i]))
            leave.append((abs(d[i]) + size) / abs(u[i]))
        else:
            return None
    if enter == [None, None]:  # overlapping already: not a state the world reaches
        return None
    start = max(e for e in enter if e is not None)
    ends = [x for x in leave if x is not None]
    if ends and start >= min(ends):
        return None
    return start, "contact", tuple(i for i in (0, 1) if enter[i] == start)


def _draw_scene(rng: np.random.Generator, frames: int, height: int, width: int, size: int,
                first_color: str, shape: str | None, direction: str | None, two_objects: bool,
                collide: bool, occluder: bool, speed_range: tuple[float, float] = SPEED_RANGE
                ) -> tuple[list[ShapeObject], Occluder | None, list[float]]:
    """Objects, bar and contact times of a clip with `collide` or `occluder` (module docstring)."""
    others = [c for c in COLORS if c != first_color]
    for _ in range(TRIES):  # the first object (and bar), redrawn while nothing else fits
        shape0 = shape or SHAPES[rng.integers(len(SHAPES))]
        dir0 = direction or DIRECTIONS[rng.integers(len(DIRECTIONS))]
        m0 = _draw_motion(rng, frames, height, width, size, dir0, speed_range)
        bar = _place_bar(rng, m0, frames, height, width, size) if occluder else None
        if occluder and bar is None:
            continue
        first = ShapeObject(first_color, shape0, dir0, size, _centers(m0, frames))
        if not two_objects:
            return [first], bar, []
        second_color = others[rng.integers(len(others))]
        aimed = collide and rng.random() < AIM_SHARE
        if scene := _second(rng, first, m0, bar, second_color, aimed, frames, height, width,
                            collide, speed_range):
            return scene
    raise UserError(f"could not place the objects and bar in a {height}x{width} frame")


def _second(rng: np.random.Generator, first: ShapeObject, m0: _Motion, bar: Occluder | None,
            color: str, aimed: bool, frames: int, height: int, width: int, collide: bool,
            speed_range: tuple[float, float] = SPEED_RANGE):
    """(objects, bar, contacts) with a second object drawn to the rules, or None if none fits."""
    size, free, fallback = first.size, free_steps(frames), None
    for attempt in range(TRIES):
        shape1 = SHAPES[rng.integers(len(SHAPES))]
        dir1 = DIRECTIONS[rng.integers(len(DIRECTIONS))]
        m1 = _draw_motion(rng, frames, height, width, size, dir1, speed_range)
        if aimed and attempt < TRIES // 2:  # then unaimed draws, in case no aim fits
            _aim(rng, m0, m1, frames)
        if collide:
            (c0, c1), contacts = simulate([m0.start_center(), m1.start_center()],
                                          [m0.velocity(), m1.velocity()], frames, height, width,
                                          size)
        else:
            (c0, c1), contacts = (first.centers, _centers(m1, frames)), []
        ok = (np.abs(c1[0] - c0[0]).max() >= size + 1
              and (bar is None or not any(bar.near(c, size, CLEARANCE) for c in c1[:2]))
              and all(tau >= free for tau in contacts))
        if ok and bar is not None and contacts:
            near = [t for t in range(frames) if any(bar.near(c[t], size, CLEARANCE)
                                                    for c in (c0, c1))]
            ok = not any(abs(tau - t) <= CONTACT_GAP for tau in contacts for t in near)
        if ok:
            scene = ([ShapeObject(first.color, first.shape, first.direction, size, c0),
                      ShapeObject(color, shape1, dir1, size, c1)], bar, contacts)
            fallback = fallback or scene
            if contacts or not aimed:
                return scene
    return fallback


def _place_bar(rng: np.random.Generator, m: _Motion, frames: int, height: int, width: int,
               size: int) -> Occluder | None:
    """A bar across the object's axis, at a position drawn uniformly from those that leave
    CLEARANCE px between it and the object's box in frames 0 and 1 (None if there is none)."""
    thickness = bar_thickness(size)
    horizontal = not m.horizontal
    extent = height if horizontal else width
    centers = _centers(m, min(frames, 2))
    valid = [b for b in range(extent - thickness + 1)
             if not any(Occluder(horizontal, b, thickness).near(c, size, CLEARANCE)
                        for c in centers)]
    if not valid:
        return None
    return Occluder(horizontal, valid[rng.integers(len(valid))], thickness)


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


def parse_holdout(pattern: str) -> tuple[str, str, str]:
    """"red circle up" (or "red circle moving up"; "*" for any value) -> (color, shape, dir)."""
    words = [w for w in pattern.lower().split() if w != "moving"]
    valid = (list(COLORS), list(SHAPES), list(DIRECTIONS))
    if len(words) != 3 or any(w != "*" and w not in v for w, v in zip(words, valid)):
        raise UserError(f"a held-out combination is 'COLOR SHAPE DIRECTION' from the vocabulary "
                        f"(or * for any), e.g. 'red circle up' or '* square left'; got {pattern!r}")
    return words[0], words[1], words[2]


def held_out(obj: ShapeObject, patterns: Sequence[tuple[str, str, str]]) -> bool:
    """Whether an object's (color, shape, direction) matches a held-out pattern."""
    mine = (obj.color, obj.shape, obj.direction)
    return any(all(p in ("*", v) for p, v in zip(pattern, mine)) for pattern in patterns)


class ShapesWorld(ProceduralWorld):
    """The shapes world as an infinite dataset; with `two_objects`, half the clips have two;
    `collide` makes every two-object clip collide-enabled; with `occluder`, half the clips have
    the gray bar; a `continuing` share of the clips (never with `collide` or `occluder`) start
    mid-motion, captioned as `continuing_caption` says. Each option draws after the others and
    only when set, so the options off leave the stream unchanged."""

    def __init__(self, sizes: list[tuple[int, int, int]] | None = None, seed: int = 0,
                 two_objects: bool = False, collide: bool = False,
                 occluder: bool = False, speed_range: tuple[float, float] = SPEED_RANGE,
                 scale_range: tuple[float, float] | None = None,
                 holdout: Sequence[str] = (), continuing: float = 0.0,
                 continuing_caption: str = "empty") -> None:
        super().__init__(sizes, seed)
        if collide and not two_objects:
            raise UserError("collide needs two_objects (a collision takes two objects)")
        if not 0 <= continuing <= 1 or (continuing and (collide or occluder)):
            raise UserError(f"continuing must be in [0, 1], and 0 with collide or occluder; got "
                            f"{continuing}")
        _check_choice("continuing caption", continuing_caption, CONTINUING_CAPTIONS)
        self.continuing, self.continuing_caption = continuing, continuing_caption
        self.two_objects, self.collide, self.occluder = two_objects, collide, occluder
        self.speed_range, self.scale_range = tuple(speed_range), scale_range
        self.holdout = [parse_holdout(p) for p in holdout]

    def _draws(self, index: int) -> tuple:
        """The draws behind sample `index`, in their order: the generator (for redraws), the
        size, two objects or one, the render seed, the bar, the scale and the skip."""
        rng, (t, h, w) = self._rng(index)
        two = self.two_objects and bool(rng.integers(2))
        seed = int(rng.integers(2**63))
        bar = self.occluder and bool(rng.integers(2))
        scale = None  # draws only where a range is set: the default stream stays as it was
        if self.scale_range is not None:
            scale = float(rng.uniform(*self.scale_range))
        skip = 0
        if self.continuing and rng.uniform() < self.continuing:
            skip = int(rng.integers(1, CONTINUING_SKIP + 1))
        return rng, (t, h, w), two, seed, bar, scale, skip

    def continues(self, index: int) -> bool:
        """Whether sample `index` is a continuing clip (starts mid-motion), without rendering it."""
        return self._draws(index)[-1] > 0

    def clip(self, index: int) -> ShapesClip:
        """The full `ShapesClip` (with object tracks) behind sample `index`. Clips showing a
        held-out combination are drawn again from the same generator (`holdout`); a continuing
        clip's caption is empty, undirected or its first step's (`continuing_caption`)."""
        rng, (t, h, w), two, seed, bar, scale, skip = self._draws(index)
        for _ in range(1000):
            clip = render_clip(t, h, w, seed=seed, two_objects=two, collide=self.collide and two,
                               occluder=bar, speed_range=self.speed_range, scale=scale, skip=skip)
            if not any(held_out(o, self.holdout) for o in clip.objects):
                if skip:  # the caption's direction held at frame -skip, not here
                    kind = self.continuing_caption
                    clip.caption = (undirected(clip.caption) if kind == "undirected" else
                                    moving_caption(clip) if kind == "moving" else "")
                return clip
            seed = int(rng.integers(2**63))
        raise UserError("the held-out combinations leave (almost) nothing to train on")

    def sample(self, index: int) -> tuple[torch.Tensor, str]:
        """Sample `index` of the stream (deterministic): (frames uint8 (T, H, W, 3), caption)."""
        clip = self.clip(index)
        return torch.from_numpy(clip.frames), clip.caption
