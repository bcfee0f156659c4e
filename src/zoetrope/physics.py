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
  farther than WALL_SLACK px plus one step (the steps to the nearer seen frame either side, when
  frames are unseen) from the wall it turns at. Each ideal bounce is matched
  to the nearest reversal at the same wall within the time to cross the room; one the ideal path
  itself would show as a reversal in the seen frames (with a noise margin) and that finds none is
  missed. Reversal times are sub-frame: the crossing of the incoming and outgoing lines at the
  fitted speed through the frames either side of the turning frame.

The richer world (`collide`, `occluder`; see `zoetrope.data.shapes`):
- Occluder: a frame where the object's box, placed from its centroid and grown by COVER_PX,
  reaches the bar's hidden pixels (the bar and its 1 px rim, which the critic counts as
  background) is skipped: part of the object may be cut off, shifting its centroid. A cut
  centroid lies within half the visible extent of the cut edge, so the box so placed still
  reaches the bar. The ideal path runs on behind the bar, and the frames after it come out are
  measured. Without the bar mask (`physics_from_critique` with only a critique), frames whose
  area is under AREA_KEEP x the track's median are skipped instead.
- Two objects: frames where their boxes overlap by more than OVERLAP_PX (objects of a world
  without `collide` pass through each other, one in front) are skipped. A contact is a step
  k -> k + 1 in which the boxes, moved at the relative velocity of the step before k (or back
  from k + 1 at that of the step after), come within size + CONTACT_SLACK on both axes while
  closing; its time is where they do. An object with a contact is scored piecewise: between
  contacts each coordinate follows its own fold(s + v t) (the world steps x and y
  independently, reflecting each at its walls), fitted as above; its bounces and reversals are
  judged per stretch and coordinate, so a reversal away from walls and contacts is still
  mid-air. Speed drift is then the observed over the ideal speed in the last quarter, against
  the same ratio in the first: a collision changes speed lawfully, so only a change the
  stretches' fits do not explain counts. Objects without a contact keep the one-axis method.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .critic import Critique, ObjectReport, critique, find_bar, has_occluder
from .data.shapes import SHAPES
from .errors import UserError

HUBER_PX = 1.0  # residuals up to here (crisp rasterisation: <= 0.5 px) count quadratically
GRID_DRIFT = 2.0  # px: neighbouring grid speeds part by at most this over the clip
MAX_ITERATIONS = 50  # reweighting passes; ground truth converges in 2-4
REVERSAL_PX, REVERSAL_SPEEDS = 1.5, 0.5  # a turn needs a retreat of max(1.5 px, 0.5 x speed)
TURN_NOISE = 1.0  # px of margin before an ideal bounce is expected to show as a reversal
WALL_SLACK = 2.0  # px: a turning frame within this plus one step of a wall is a bounce
MIN_SPEED = 0.1  # px/frame: below this in the first quarter, speed drift is undefined
STILL = 0.5  # px/frame: slower stretches (stopped by a collision) give no speed ratio (+-0.5 px)
COVER_PX = 1.0  # px: a box this close to the bar's hidden pixels may be cut (centroids +-0.5)
AREA_KEEP = 0.95  # no bar mask: areas under this share of the median were cut (5%: <= 0.4 px)
OVERLAP_PX = 1.0  # px: boxes overlapping by more (on both axes) hide part of one object
CONTACT_SLACK = 2.0  # px: tracked boxes this far apart may touch (each centre off by <= 1 px)
FIT_PX = 0.75  # px: stretches fitting each coordinate this well explain a contact (crisp: 0.5)
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
class Segment:
    """A stretch of frames between contacts, moving at one (folded) velocity."""

    first: int  # first frame of the stretch
    last: int  # last frame
    velocity: tuple[float, float]  # fitted (vx, vy) px/frame just after `first`


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
    contacts: list[float] = field(default_factory=list)  # collision times found (frames)
    segments: list[Segment] = field(default_factory=list)  # stretches between contacts
    covered: list[int] = field(default_factory=list)  # frames skipped: cut by the bar or object


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


def fit_path(t: np.ndarray, q: np.ndarray, room: float,
             top: float | None = None) -> tuple[float, float]:
    """(s px, v >= 0 px/frame) of the bouncing path fold(s + v t) best fitting positions q at
    frames t (sorted), q the box centre minus size / 2 along the axis; the grid searches speeds
    up to `top` (default room: every path, at whole frames)."""
    if room <= 0 or len(t) < 2:
        return float(np.clip(q[0], 0, max(room, 0))), 0.0
    top = room if top is None else min(top, room)
    speeds = np.linspace(0, top, math.ceil(top * (t[-1] - t[0]) / GRID_DRIFT) + 1)  # (V,)
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
        reach = max(t[e] - t[a], t[b] - t[e])  # frames: unseen ones could hide the wall
        out.append(Reversal(float(np.clip(frame, t[a], t[b])), _WALLS[axis][sign > 0],
                            float(gap), bool(gap > WALL_SLACK + v * reach), False))
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
    shown = set()
    for e, sign in _turns(ideal, max(REVERSAL_PX, REVERSAL_SPEEDS * v) + TURN_NOISE):
        at_wall = [i for i, b in enumerate(bounces) if b.wall == _WALLS[axis][sign > 0]]
        if at_wall:  # the nearest at the wall it turns at (unseen frames may hide others)
            shown.add(min(at_wall, key=lambda i: abs(bounces[i].frame - t[e])))
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
    velocity = _signed(s, v, room, 0.0)
    return ObjectPhysics(
        target, shape, obj, axis, len(seen), velocity,
        [(round(float(x), 3), round(float(y), 3)) for x, y in ideal], errors,
        rms, peak, rms / side, peak / side, v, first, last,
        None if first is None or last is None or first < MIN_SPEED else last / first - 1,
        listed, reversals, sum(b.observed is None for b in listed),
        sum(r.mid_air for r in reversals), sum(not r.mid_air and not r.matched for r in reversals),
        segments=[Segment(0, n - 1, (velocity, 0.0) if k == 0 else (0.0, velocity))])


def _signed(s: float, v: float, room: float, t: float) -> float:
    """The velocity (px/frame, signed) of the path fold(s + v t) just after frame t."""
    now, soon = _fold(np.array([s + v * t, s + v * t + 1e-6 * v]), room)
    return float(v if soon >= now else -v)


def score_tracks(tracks: list[list[tuple[float, float] | None]], size: tuple[int, int, int],
                 shapes: list[str], targets: list[str] | None = None,
                 object_size: int | None = None,
                 skip: list[list[bool]] | None = None) -> list[ObjectPhysics]:
    """Score one or two objects' tracked centroids (as `score_track`) in a clip where they may
    collide: with two, overlapping frames are skipped, contacts found, and an object near the
    other is fitted piecewise between contacts (module docstring). `skip`: per object and frame,
    a centroid to leave out (cut by the bar)."""
    n, h, w = size
    obj = object_size or world_size(h, w)
    targets = targets or [""] * len(tracks)
    skip = skip or [[False] * n for _ in tracks]
    out = [[None if x else c for c, x in zip(tr, xs)] for tr, xs in zip(tracks, skip)]
    if len(tracks) != 2:
        scores = [score_track(c, size, s, tg, obj) for c, s, tg in zip(out, shapes, targets)]
        for score, xs in zip(scores, skip):
            score.covered = [t for t in range(n) if xs[t]]
        return scores
    boxes = [_boxes(c, s, obj) for c, s in zip(tracks, shapes)]  # (T, 2) box centres, NaN unseen
    overlap = np.all(np.abs(boxes[1] - boxes[0]) < obj - OVERLAP_PX, 1)  # NaN compares False
    tracks = [[None if overlap[t] else c for t, c in enumerate(tr)] for tr in out]
    boxes = [_boxes(c, s, obj) for c, s in zip(tracks, shapes)]
    rooms = (float(w - obj), float(h - obj))
    windows = _windows(boxes[0], boxes[1], obj)
    near = {k for steps in windows for k in steps}  # steps where the boxes may touch
    splits = _choose_splits([b - obj / 2 for b in boxes], windows, rooms)
    contacts = [_contact_time([b - obj / 2 for b in boxes], splits, i, rooms, obj)
                for i in range(len(splits))]
    scores = []
    for c, s, tg, xs in zip(tracks, shapes, targets, skip):
        score = (_score_pieces(c, size, s, tg, obj, splits, contacts, near) if near
                 else score_track(c, size, s, tg, obj))
        score.covered = [t for t in range(n) if xs[t] or overlap[t]]
        scores.append(score)
    return scores


def _boxes(centers: list[tuple[float, float] | None], shape: str, obj: int) -> np.ndarray:
    """Box centres (T, 2) px from tracked centroids (NaN where unseen)."""
    xy = np.array([(np.nan, np.nan) if c is None else c for c in centers], np.float64)
    return xy - [0.0, centroid_offset(shape, obj)]


def _touch(d: np.ndarray, u: np.ndarray, reach: float) -> float | None:
    """First time >= 0 at which boxes `d` apart (px, (2,)) closing at `u` px/frame come within
    `reach` on both axes, or None."""
    lo, hi = 0.0, math.inf
    for di, ui in zip(d, u):
        if ui == 0:
            if abs(di) > reach:
                return None
            continue
        a, b = sorted(((-reach - di) / ui, (reach - di) / ui))
        lo, hi = max(lo, a), min(hi, b)
    return lo if lo <= hi else None


def _windows(a: np.ndarray, b: np.ndarray, obj: int) -> list[list[int]]:
    """Runs of steps k -> k + 1 (both objects seen at both ends) in which two box-centre tracks
    (T, 2) px of obj-px boxes may touch: within obj + CONTACT_SLACK on both axes at either end,
    or getting there within the step when moved at the relative velocity of the step before
    (or back at that of the step after: a fast head-on contact can fall between frames)."""
    d = b - a  # (T, 2)
    ok = ~np.isnan(d).any(1)
    reach = obj + CONTACT_SLACK
    near = ok & (np.abs(np.nan_to_num(d, nan=np.inf)).max(1) <= reach)
    runs: list[list[int]] = []
    for k in range(len(d) - 1):
        if not (ok[k] and ok[k + 1]):
            continue
        forward = k > 0 and ok[k - 1] and _touch(d[k], d[k] - d[k - 1], reach)
        back = k + 2 < len(d) and ok[k + 2] and _touch(d[k + 1], d[k + 1] - d[k + 2], reach)
        if near[k] or near[k + 1] or any(t is not None and t is not False and t <= 1
                                         for t in (forward, back)):
            if runs and runs[-1][-1] == k - 1:
                runs[-1].append(k)
            else:
                runs.append([k])
    return runs


def _fit_pieces(q: np.ndarray, bounds: list[int], rooms: tuple[float, float]) -> np.ndarray:
    """Per frame, the fitted (s, v) of each coordinate's bouncing path over its stretch:
    (T, 2, 2), NaN in stretches with no seen frame. q: (T, 2) box low corners px (NaN unseen);
    stretches [bounds[i], bounds[i + 1])."""
    fits = np.full((len(q), 2, 2), np.nan)
    for a, b in zip(bounds, bounds[1:]):
        t = np.array([i for i in range(a, b) if not np.isnan(q[i, 0])], np.float64)
        if len(t):
            for k in (0, 1):
                # A short stretch can zigzag (a bounce every frame) onto a mid-air turn: paths
                # bouncing more than once in two frames are no motion a clip can show.
                fits[a:b, k] = fit_path(t, q[t.astype(int), k], rooms[k], rooms[k] / 2)
    return fits


def _path(fits: np.ndarray, t: np.ndarray, rooms: tuple[float, float]) -> np.ndarray:
    """Box low corners (len(t), 2) on fitted paths `fits` (len(t), 2, 2) at frames t."""
    return np.stack([_fold(fits[:, k, 0] + fits[:, k, 1] * t, rooms[k]) for k in (0, 1)], 1)


def _choose_splits(qs: list[np.ndarray], windows: list[list[int]],
                   rooms: tuple[float, float]) -> list[int]:
    """Contact steps, window by window: the fewest splits (0 to 3 steps k: frames <= k before,
    > k after) whose stretches fit both objects' box low corners qs (T, 2) within FIT_PX on each
    coordinate (else the 3 of least Huber loss), judged up to the next window."""
    n, chosen = len(qs[0]), []
    for j, steps in enumerate(windows):
        lo = chosen[-1] + 1 if chosen else 0
        hi = windows[j + 1][0] + 1 if j + 1 < len(windows) else n  # the next contact may follow
        for count in range(min(3, len(steps)) + 1):
            best = min((_split_fit(qs, lo, hi, pick, rooms) + (pick,)
                        for pick in itertools.combinations(steps, count)), key=lambda f: f[0])
            if best[1] <= FIT_PX:
                break
        chosen += list(best[2])
    return chosen


def _split_fit(qs: list[np.ndarray], lo: int, hi: int, pick: tuple[int, ...],
               rooms: tuple[float, float]) -> tuple[float, float]:
    """(Huber loss, largest |residual| px) of both objects' frames [lo, hi) fitted in stretches
    split after the steps in `pick`."""
    bounds = [lo] + [k + 1 for k in pick] + [hi]
    worst, loss = 0.0, 0.0
    for q in qs:
        part = np.full_like(q, np.nan)
        part[lo:hi] = q[lo:hi]
        fits = _fit_pieces(part, bounds, rooms)[lo:hi]
        r = q[lo:hi] - _path(fits, np.arange(lo, hi, dtype=np.float64), rooms)
        r = r[~np.isnan(r[:, 0])]
        worst = max(worst, float(np.abs(r).max(initial=0.0)))
        loss += float(_huber(r).sum())
    return loss, worst


def _contact_time(qs: list[np.ndarray], splits: list[int], i: int, rooms: tuple[float, float],
                  obj: int) -> float:
    """When the boxes touch in step splits[i] -> + 1 on the paths fitted before it (the first
    time their low corners come within obj on both axes; else their closest approach)."""
    k = splits[i]
    bounds = [0] + [s + 1 for s in splits] + [len(qs[0])]
    t = np.linspace(k, k + 1, 101)
    paths = [_path(np.repeat(_fit_pieces(q, bounds, rooms)[k][None], len(t), 0), t, rooms)
             for q in qs]
    gap = np.abs(paths[1] - paths[0]).max(1)  # (101,) Chebyshev distance of the box centres
    touching = np.nonzero(gap <= obj)[0]
    return float(t[touching[0]] if len(touching) else t[np.argmin(gap)])


def _score_pieces(centers: list[tuple[float, float] | None], size: tuple[int, int, int],
                  shape: str, target: str, obj: int, splits: list[int],
                  contacts: list[float], near: set[int] = frozenset()) -> ObjectPhysics:
    """Score a track in stretches split after the steps `splits` (at `contacts`, frames), each
    coordinate on its own bouncing path in each stretch; steps k -> k + 1 for k in `near` (the
    boxes may touch) are left out of the speeds."""
    n, h, w = size
    offset = centroid_offset(shape, obj)
    seen = [i for i, c in enumerate(centers) if c is not None]
    if not seen:
        return score_track(centers, size, shape, target, obj)
    xy = np.array([(np.nan, np.nan) if c is None else c for c in centers], np.float64)  # (T, 2)
    q = xy - [obj / 2, obj / 2 + offset]  # the box's low corner: fold(s + v t) in [0, room]
    rooms = (float(w - obj), float(h - obj))
    bounds = [0] + [k + 1 for k in splits] + [n]
    fits = _fit_pieces(q, bounds, rooms)  # (T, coordinate, (s, v))
    frames = np.arange(n, dtype=np.float64)
    ideal = _path(fits, frames, rooms)  # (T, 2), NaN in stretches never seen
    lap = np.stack([np.floor((fits[:, k, 0] + fits[:, k, 1] * frames) / rooms[k])
                    if rooms[k] > 0 else np.zeros(n) for k in (0, 1)], 1)  # a change: a bounce
    segments, bounces, reversals = [], [], []
    for a, b in zip(bounds, bounds[1:]):
        t = np.array([i for i in range(a, b) if i in seen], np.float64)
        if not len(t):
            continue
        velocity = []
        for k, name in enumerate("xy"):
            s, v = float(fits[a, k, 0]), float(fits[a, k, 1])
            listed, turned = _judge_bounces(t, q[t.astype(int), k], rooms[k], s, v, name)
            bounces += listed
            reversals += turned
            velocity.append(_signed(s, v, rooms[k], float(a)))
        segments.append(Segment(a, b - 1, (velocity[0], velocity[1])))
    ideal += [obj / 2, obj / 2 + offset]
    err = np.hypot(*(xy[seen] - ideal[seen]).T)
    # Speed drift: observed over ideal speed, last quarter against first; steps within one
    # stretch, over no bounce and no step near the other object, at an ideal speed of STILL or
    # more.
    stretch = np.searchsorted(bounds, seen, "right")
    step_ok = [i for i in range(len(seen) - 1)
               if stretch[i] == stretch[i + 1] and near.isdisjoint(range(seen[i], seen[i + 1]))
               and np.all(lap[seen[i]] == lap[seen[i + 1]])
               and np.hypot(*fits[seen[i], :, 1]) >= STILL]
    quarter = max(2, math.ceil(n / 4))

    def observed(start: int, stop: int) -> tuple[float | None, float | None]:
        """(observed px/frame, observed over ideal) over the steps in [start, stop)."""
        steps = [i for i in step_ok if start <= seen[i] and seen[i + 1] < stop]
        if not steps:
            return None, None
        gap = sum(seen[i + 1] - seen[i] for i in steps)
        moved = sum(float(np.hypot(*(xy[seen[i + 1]] - xy[seen[i]]))) for i in steps)
        lawful = sum(float(np.hypot(*(ideal[seen[i + 1]] - ideal[seen[i]]))) for i in steps)
        return moved / gap, moved / lawful

    first, ratio_first = observed(0, quarter)
    last, ratio_last = observed(n - quarter, n)
    side = min(h, w)
    rms, peak = float(np.sqrt(np.mean(err**2))), float(err.max())
    errors: list[float | None] = [None] * n
    for i, e in zip(seen, err):
        errors[i] = round(float(e), 3)
    v0 = segments[0].velocity
    k = int(abs(v0[1]) > abs(v0[0]))
    return ObjectPhysics(
        target, shape, obj, "xy"[k], len(seen), v0[k],
        [None if np.isnan(x) else (round(float(x), 3), round(float(y), 3)) for x, y in ideal],
        errors, rms, peak, rms / side, peak / side, float(np.hypot(*v0)), first, last,
        None if not ratio_first or ratio_last is None else ratio_last / ratio_first - 1,
        bounces, reversals, sum(b.observed is None for b in bounces),
        sum(r.mid_air for r in reversals), sum(not r.mid_air and not r.matched for r in reversals),
        sorted({round(c, 3) for c in contacts}), segments)


def _cut_by_bar(report: ObjectReport, shape: str, obj: int, bar: np.ndarray | None) -> list[bool]:
    """Per frame: the object may be cut by the bar (module docstring), so its centroid is off."""
    if bar is None:  # no mask: an area short of the track's median says it was cut
        areas = [a for a in report.areas if a]
        ref = float(np.median(areas)) if areas else 0.0
        return [a is not None and a < AREA_KEEP * ref for a in report.areas]
    ys, xs = np.nonzero(bar)
    if not len(xs):
        return [False] * len(report.centers)
    lo = np.array([xs.min() - 1, ys.min() - 1], np.float64)  # the hidden pixels: bar + 1 px rim
    hi = np.array([xs.max() + 2, ys.max() + 2], np.float64)  # exclusive, px
    boxes = _boxes(report.centers, shape, obj)
    reach = obj / 2 + COVER_PX
    return [bool(np.all(c + reach > lo) and np.all(c - reach < hi)) for c in boxes]


def _shape(report: ObjectReport) -> str:
    """The shape whose centroid offset applies: the observed one, else the prompt's."""
    return report.shape.observed if report.shape.observed in SHAPES else report.shape.expected


def physics_from_critique(verdict: Critique, object_size: int | None = None,
                          bar: np.ndarray | None = None) -> PhysicsScore:
    """Physics scores from a shapes-world Critique's tracks (no second segmentation);
    `object_size` as for `score_track`; `bar`: the occluder's bool (H, W) mask (`find_bar`),
    used when the prompt has the occluder (without it, cut frames are found from areas)."""
    if verdict.world != "shapes":
        raise UserError(f"physics scores cover the shapes world, not {verdict.world!r}")
    size = tuple(verdict.size)
    obj = object_size or world_size(size[1], size[2])
    shapes = [_shape(o) for o in verdict.objects]
    tracks = [list(o.centers) for o in verdict.objects]
    cut = None
    if has_occluder(verdict.prompt):
        cut = [_cut_by_bar(o, s, obj, bar) for o, s in zip(verdict.objects, shapes)]
    return PhysicsScore(verdict.prompt, size, score_tracks(
        tracks, size, shapes, [o.target for o in verdict.objects], obj, cut))


def physics_scores(frames: np.ndarray, prompt: str) -> PhysicsScore:
    """Critique uint8 (T, H, W, 3) frames against a shapes-world prompt and score their physics."""
    verdict = critique(frames, prompt)
    bar = find_bar(np.asarray(frames)) if has_occluder(prompt) else None
    return physics_from_critique(verdict, bar=bar)
