"""Physics scores for the shapes world: each tracked object against the ideal trajectory.

The law (`zoetrope.data.shapes`): an object moves at constant speed along one axis and bounces
elastically off the walls, its size x size box reflecting at the frame edges; the other coordinate
is fixed. Along the axis its box centre is lo + fold(u(t)) with lo = size / 2, room = extent - size,
u(t) = s + v t the straight path with the reflections unfolded, and fold the triangle wave of
period 2 room mapping u onto [0, room] (`bouncing_centers` renders exactly this). Since fold is
even, every such path has a form with v >= 0; u mod 2 room <= room means it is moving towards +.

Conventions: positions are (x, y) px in the world's geometry (x right, y down, pixel (i, j) centred
at (j + 0.5, i + 0.5)); frame indices are 0-based; speeds are px/frame; times are frames, real
valued where a bounce falls between frames; a "share" is px over the shorter frame side.

Method, per prompt object, on the frames where the critic tracked it (unseen frames are skipped):
- Size: the world's rule, size = max(2, round(min(H, W) / 4)). The critic reports centroids, which
  for the upright triangle lie size / 6 below the box centre (a triangle's centroid is two thirds
  of its height from the apex); circles and squares are symmetric. Rasterisation moves a crisp
  centroid by up to 0.5 px either way.
- Axis: the one the track moves most along (summed |steps|). Physics is judged apart from the
  prompt: whether it moved the asked way is the critic's direction check.
- Fit: (s, v) minimise a Huber loss (quadratic up to HUBER_PX, linear beyond) of the along-axis
  residuals, so a corrupted stretch (a stall, a jump) does not pull the fit off the frames that
  obey the law, and the error shows where the law broke. A grid over v in [0, room] (faster
  speeds alias onto it), anchored on the first, middle and last seen frames, finds the basin;
  iteratively reweighted least squares, re-choosing each frame's fold branch every pass, refines
  it. The fixed coordinate is the median across the axis.
- Speed drift: along-axis speed observed over the first and last quarter of the clip (steps over
  an ideal bounce left out), and (last - first) / first.
- Bounces: a reversal is a turning point the track then retreats from by REVERSAL_PX or
  REVERSAL_SPEEDS x the fitted speed (whichever is more); it is mid-air when its turning frame is
  farther than WALL_SLACK px plus one step from the wall it turns at. Each ideal bounce is matched
  to the nearest reversal at the same wall within the time to cross the room; one the ideal path
  itself would show as a reversal in the seen frames (with a noise margin) and that finds none is
  missed. Reversal times are sub-frame: the crossing of the incoming and outgoing lines at the
  fitted speed through the frames either side of the turning frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .critic import Critique, ObjectReport, critique
from .data.shapes import SHAPES
from .errors import UserError

HUBER_PX = 1.0  # residuals up to here (crisp rasterisation: <= 0.5 px) count quadratically
GRID_DRIFT = 2.0  # px: neighbouring grid speeds part by at most this over the clip
MAX_ITERATIONS = 50  # reweighting passes; ground truth converges in 2-4
REVERSAL_PX, REVERSAL_SPEEDS = 1.5, 0.5  # a turn needs a retreat of max(1.5 px, 0.5 x speed)
TURN_NOISE = 1.0  # px of margin before an ideal bounce is expected to show as a reversal
WALL_SLACK = 2.0  # px: a turning frame within this plus one step of a wall is a bounce
MIN_SPEED = 0.1  # px/frame: below this in the first quarter, speed drift is undefined
_WALLS = {"x": ("left", "right"), "y": ("top", "bottom")}  # (near: u fold 0, far: fold room)


@dataclass
class Bounce:
    """An ideal bounce and the observed reversal matched to it."""

    frame: float  # when the ideal box touches the wall (frames)
    wall: str  # "left", "right", "top" or "bottom"
    observed: float | None  # when the matched reversal turns (None: not seen, a missed bounce)
    delay: float | None  # observed - frame (frames; positive = late)


@dataclass
class Reversal:
    """An observed reversal of the motion along the axis."""

    frame: float  # when it turns (frames)
    wall: str  # the wall it turns away from
    gap: float  # px between the box and that wall at the turning frame (negative: past it)
    mid_air: bool  # turned away from every wall
    matched: bool  # an ideal bounce explains it


@dataclass
class ObjectPhysics:
    """One prompt object's track scored against its fitted ideal trajectory."""

    target: str  # e.g. "red circle moving left"
    shape: str  # the shape whose centroid offset was used
    size: int  # object size, px
    axis: str  # "x" or "y": the axis of motion ("x" when never seen)
    seen: int  # frames where the object was tracked
    velocity: float | None  # fitted along-axis velocity at frame 0, px/frame (+ = right / down)
    ideal: list[tuple[float, float] | None]  # ideal centroid (x, y) per frame, px (to 1/1000)
    errors: list[float | None]  # per frame: px from tracked centroid to ideal (None: unseen)
    rms_error: float | None  # px, over seen frames
    max_error: float | None  # px
    rms_share: float | None  # rms_error / shorter frame side
    max_share: float | None
    speed: float | None  # fitted speed, px/frame
    speed_first: float | None  # observed along-axis speed in the first quarter, px/frame
    speed_last: float | None  # ... and in the last quarter
    speed_drift: float | None  # (speed_last - speed_first) / speed_first
    bounces: list[Bounce]  # ideal bounces the seen frames could show
    reversals: list[Reversal]  # observed reversals
    missed_bounces: int  # bounces with no observed reversal
    mid_air_reversals: int  # reversals away from every wall
    extra_bounces: int  # reversals at a wall that no ideal bounce explains


@dataclass
class PhysicsScore:
    """Physics scores of one clip, one entry per prompt object."""

    prompt: str
    size: tuple[int, int, int]  # (frames, height, width)
    objects: list[ObjectPhysics]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)


def world_size(height: int, width: int) -> int:
    """Object size in px in an H x W shapes-world frame (the rule of `render_clip`)."""
    return min(height, width, max(2, round(min(height, width) / 4)))


def centroid_offset(shape: str, size: int) -> float:
    """px by which a crisp shape's centroid lies below its box centre (y down)."""
    if shape not in SHAPES:
        raise UserError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")
    return size / 6 if shape == "triangle" else 0.0  # apex up: centroid 2/3 of the way down


def _fold(u: np.ndarray, room: float) -> np.ndarray:
    """Unfolded positions u (px) reflected into [0, room]: the triangle wave of period 2 room."""
    if room <= 0:
        return np.zeros_like(u)
    r = np.mod(u, 2 * room)
    return np.where(r <= room, r, 2 * room - r)


def _huber(r: np.ndarray) -> np.ndarray:
    """Huber loss of residuals r (px), HUBER_PX the bend."""
    a = np.abs(r)
    return np.where(a <= HUBER_PX, 0.5 * a**2, HUBER_PX * (a - 0.5 * HUBER_PX))


def _cost(t: np.ndarray, q: np.ndarray, room: float, s: float, v: float) -> float:
    """Huber loss of the path fold(s + v t) against positions q at frames t."""
    return float(_huber(q - _fold(s + v * t, room)).sum())


def _refine(t: np.ndarray, q: np.ndarray, room: float, s: float, v: float) -> tuple[float, float]:
    """IRLS from (s, v): per pass, fold(s + v t) = sign (s + v t) + shift on each frame's branch."""
    for _ in range(MAX_ITERATIONS):
        u = s + v * t
        k = np.floor(u / (2 * room))
        rising = u - 2 * room * k <= room
        sign = np.where(rising, 1.0, -1.0)
        shift = np.where(rising, -2 * room * k, 2 * room * (k + 1))
        r = np.abs(q - (sign * u + shift))
        w = np.sqrt(np.minimum(1.0, HUBER_PX / np.maximum(r, 1e-12)))  # Huber IRLS weights
        a = np.stack([sign, sign * t], 1) * w[:, None]
        (s_new, v_new), *_ = np.linalg.lstsq(a, (q - shift) * w, rcond=None)
        done = abs(s_new - s) < 1e-7 and abs(v_new - v) < 1e-7
        s, v = float(s_new), float(v_new)
        if done:
            break
    return (-s, -v) if v < 0 else (s, v)  # fold is even: same path with v >= 0


def fit_path(t: np.ndarray, q: np.ndarray, room: float) -> tuple[float, float]:
    """(s px, v >= 0 px/frame) of the bouncing path fold(s + v t) best fitting positions q at
    frames t (sorted), q the box centre minus size / 2 along the axis."""
    if room <= 0 or len(t) < 2:
        return float(np.clip(q[0], 0, max(room, 0))), 0.0
    speeds = np.linspace(0, room, math.ceil(room * (t[-1] - t[0]) / GRID_DRIFT) + 1)  # (V,)
    fits = []
    for a in (0, len(t) // 2, len(t) - 1):
        for u_a in (q[a], 2 * room - q[a]):  # moving towards + or - at frame t[a]
            starts = u_a - speeds * t[a]
            path = _fold(starts[:, None] + speeds[:, None] * t[None], room)  # (V, N)
            i = int(np.argmin(_huber(q[None] - path).sum(1)))
            fits.append(_refine(t, q, room, starts[i], speeds[i]))
    return min(fits, key=lambda f: _cost(t, q, room, *f))


def _turns(q: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(index, sign) of the turning points of q: running extremes that q then retreats from by at
    least `threshold`; sign +1 for a maximum (turning from rising), -1 for a minimum."""
    turns, trend, ext = [], 0, 0
    for i in range(1, len(q)):
        d = q[i] - q[ext]
        if trend == 0:
            if abs(d) >= threshold:
                trend, ext = int(np.sign(d)), i
        elif d * trend > 0:
            ext = i
        elif -d * trend >= threshold:
            turns.append((ext, trend))
            trend, ext = -trend, i
    return turns


def _reversals(t: np.ndarray, q: np.ndarray, room: float, v: float, axis: str) -> list[Reversal]:
    """Observed reversals of positions q at frames t, unmatched."""
    out = []
    for e, sign in _turns(q, max(REVERSAL_PX, REVERSAL_SPEEDS * v)):
        a, b = e - 1, e + 1  # a turn needs a retreat after it, and ext > 0, so both exist
        # Lines of slope +-v through frames a and b, each on its side of the turn, cross at:
        frame = t[e] if v <= 0 else (t[a] + t[b]) / 2 + sign * (q[b] - q[a]) / (2 * v)
        gap = room - q[e] if sign > 0 else q[e]
        out.append(Reversal(float(np.clip(frame, t[a], t[b])), _WALLS[axis][sign > 0],
                            float(gap), bool(gap > WALL_SLACK + v), False))
    return out


def _bounces(t: np.ndarray, room: float, s: float, v: float, axis: str) -> tuple[list, set]:
    """Ideal bounces between the first and last seen frames, and the indices of those the ideal
    path itself shows as a reversal at the seen frames (with TURN_NOISE px to spare)."""
    if room <= 0 or v <= 0:
        return [], set()
    first, last = math.floor((s + v * t[0]) / room) + 1, math.ceil((s + v * t[-1]) / room)
    bounces = [Bounce((m * room - s) / v, _WALLS[axis][m % 2], None, None)
               for m in range(first, last)]
    ideal = _fold(s + v * t, room)
    shown = {int(np.argmin([abs(b.frame - t[e]) for b in bounces]))
             for e, _ in _turns(ideal, max(REVERSAL_PX, REVERSAL_SPEEDS * v) + TURN_NOISE)}
    return bounces, shown


def _match(bounces: list[Bounce], reversals: list[Reversal], window: float) -> None:
    """Pair bounces with reversals at the same wall, nearest in time first, in place."""
    pairs = sorted((abs(r.frame - b.frame), i, j) for i, b in enumerate(bounces)
                   for j, r in enumerate(reversals)
                   if not r.mid_air and r.wall == b.wall and abs(r.frame - b.frame) <= window)
    for _, i, j in pairs:
        if bounces[i].observed is None and not reversals[j].matched:
            bounces[i].observed = reversals[j].frame
            bounces[i].delay = reversals[j].frame - bounces[i].frame
            reversals[j].matched = True


def _judge_bounces(t: np.ndarray, q: np.ndarray, room: float, s: float, v: float,
                   axis: str) -> tuple[list[Bounce], list[Reversal]]:
    """The ideal bounces the seen frames could show, each matched to an observed reversal or
    not, and every observed reversal."""
    bounces, shown = _bounces(t, room, s, v, axis)
    reversals = _reversals(t, q, room, v, axis)
    _match(bounces, reversals, room / v if v > 0 else 0.0)
    return [b for i, b in enumerate(bounces) if i in shown], reversals


def _quarter_speed(t: np.ndarray, q: np.ndarray, room: float, s: float, v: float,
                   start: int, stop: int) -> float | None:
    """Mean along-axis speed (px/frame) over steps between seen frames in [start, stop), steps
    over an ideal bounce left out; None when there is no such step."""
    lap = np.floor((s + v * t) / room) if room > 0 else np.zeros_like(t)  # changes at a bounce
    steps = [i for i in range(len(t) - 1)
             if start <= t[i] and t[i + 1] < stop and lap[i] == lap[i + 1]]
    if not steps:
        return None
    return float(sum(abs(q[i + 1] - q[i]) for i in steps) / sum(t[i + 1] - t[i] for i in steps))


def score_track(centers: list[tuple[float, float] | None], size: tuple[int, int, int],
                shape: str, target: str = "", object_size: int | None = None) -> ObjectPhysics:
    """Score one object's tracked centroids (x, y) px per frame (None: unseen) in a clip of
    `size` = (frames, height, width) against the ideal bouncing trajectory. `object_size`: the
    object's px across when known (generalization splits change it); default the world's rule."""
    n, h, w = size
    if len(centers) != n:
        raise UserError(f"need one centre (or None) per frame: {len(centers)} for {n} frames")
    obj = object_size or world_size(h, w)
    offset = centroid_offset(shape, obj)
    seen = [i for i, c in enumerate(centers) if c is not None]
    if not seen:
        return ObjectPhysics(target, shape, obj, "x", 0, None, [None] * n, [None] * n, None, None,
                             None, None, None, None, None, None, [], [], 0, 0, 0)
    t = np.array(seen, np.float64)
    xy = np.array([centers[i] for i in seen], np.float64)  # (N, 2)
    moved = np.abs(np.diff(xy, axis=0)).sum(0)
    k = int(moved[1] > moved[0])  # 0: x, 1: y
    axis, extent = ("x", w) if k == 0 else ("y", h)
    room = float(extent - obj)
    q = xy[:, k] - obj / 2 - (offset if axis == "y" else 0.0)
    s, v = fit_path(t, q, room)
    along = obj / 2 + _fold(s + v * np.arange(n), room) + (offset if axis == "y" else 0.0)
    ideal = np.stack([along, np.full(n, np.median(xy[:, 1 - k]))], 1)[:, [k, 1 - k]]  # (T, 2)
    err = np.hypot(*(xy - ideal[seen]).T)
    quarter = max(2, math.ceil(n / 4))
    first = _quarter_speed(t, q, room, s, v, 0, quarter)
    last = _quarter_speed(t, q, room, s, v, n - quarter, n)
    listed, reversals = _judge_bounces(t, q, room, s, v, axis)
    side = min(h, w)
    rms, peak = float(np.sqrt(np.mean(err**2))), float(err.max())
    errors: list[float | None] = [None] * n
    for i, e in zip(seen, err):
        errors[i] = round(float(e), 3)
    now, soon = _fold(np.array([s, s + 1e-6 * v]), room)  # the sign of motion just after 0
    return ObjectPhysics(
        target, shape, obj, axis, len(seen), v if soon >= now else -v,
        [(round(float(x), 3), round(float(y), 3)) for x, y in ideal], errors,
        rms, peak, rms / side, peak / side, v, first, last,
        None if first is None or last is None or first < MIN_SPEED else last / first - 1,
        listed, reversals, sum(b.observed is None for b in listed),
        sum(r.mid_air for r in reversals), sum(not r.mid_air and not r.matched for r in reversals))


def _object_score(report: ObjectReport, size: tuple[int, int, int],
                  object_size: int | None = None) -> ObjectPhysics:
    """Score one critic object: its observed shape's centroid offset, else the prompt's."""
    shape = report.shape.observed if report.shape.observed in SHAPES else report.shape.expected
    return score_track(report.centers, size, shape, report.target, object_size)


def physics_from_critique(verdict: Critique, object_size: int | None = None) -> PhysicsScore:
    """Physics scores from a shapes-world Critique's tracks (no second segmentation);
    `object_size` as for `score_track`."""
    if verdict.world != "shapes":
        raise UserError(f"physics scores cover the shapes world, not {verdict.world!r}")
    return PhysicsScore(verdict.prompt, tuple(verdict.size),
                        [_object_score(o, tuple(verdict.size), object_size)
                         for o in verdict.objects])


def physics_scores(frames: np.ndarray, prompt: str) -> PhysicsScore:
    """Critique uint8 (T, H, W, 3) frames against a shapes-world prompt and score their physics."""
    return physics_from_critique(critique(frames, prompt))
