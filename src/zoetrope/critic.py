"""World-consistency critic: judge a clip against its prompt from pixels alone (no model).

Grammars (the captions of `zoetrope.data.shapes` and `zoetrope.data.mnist`):
  shapes: "a red circle moving left", optionally "... and a blue square moving up"
  mnist:  "the digit 7 moving left"

Conventions: frames are uint8 (T, H, W, 3) RGB; positions are (x, y) centroids in the shapes
world's geometry (pixel (i, j) has its centre at (j + 0.5, i + 0.5)), x right, y down, so "up" is
y decreasing; frame indices are 0-based; speeds are px/frame.

Method. A pixel is foreground when its brightest channel reaches a threshold set from the clip's
own peak brightness, so dim, blurred or compressed generations segment like crisp renders.
Foreground is cut into 8-connected components (numpy labelling, no scipy). Each component gets a
named colour (nearest palette colour after dividing by brightness, so hue survives blur and
dimming), an area, a centroid, a bounding box and a shape from two numbers: the balance (mass in
the top half of the box over mass in the bottom half: 1/3 for an upright triangle, 1 for a
circle or square) and the fill (circle pi/4, square 1: the area over the widest row times the
tallest column, each pixel counted by its brightness, so that faint edge pixels do not stretch
the extent). Each prompt object is tracked by colour and proximity, then checked:

  adherence     color, shape, and direction of motion over frames 0..ceil(T / 4)
  vanishing     the object is missing from a frame (and not hidden behind the other object)
  duplicate     an extra component of the object's colour, at least SIGNIFICANT of its size
  extra_object  a sizeable component of a colour that no prompt object has
  color_change  the object is found along its track only in another colour
  morphing      area off the median by more than MORPH_AREA, or a clear shape of another class
  teleport      a step off the previous velocity by a jump (at a wall, allowing the bounce)
  speed_change  step speed off the median (steps around a bounce excepted)
  wall_pass     the object is cut by the frame edge, vanishes at a wall, or wraps around
  bad_bounce    motion reverses while the object is away from every wall and the other object
  permanence    (prompts ending ' behind a gray bar' only; added to `checked`, ERROR_KINDS is
                unchanged) an object gone behind the bar does not come out where and when its
                velocity before (folded at the walls) puts it, or comes out in another colour or
                clearly another shape

The bar is found from pixels (grey, mid-bright, in at least half the frames: a gray blob that
does not move); its pixels and a 1 px rim are background, frames where an object touches it give
no shape, area or position, and missing frames behind it are judged by `permanence`, not
`vanishing`. Two objects may bounce off each other (the shapes world's `collide`): next to the
other object a velocity change is allowed as at a wall, and speed is judged per stretch between
such contacts. Objects that pass through each other are not flagged: captions do not say whether
a clip's world collides.

Moving MNIST is checked for direction, vanishing and duplicate only; colour and shape are "n/a".
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .data.shapes import COLORS, DIRECTIONS, OPPOSITE, SHAPES
from .errors import UserError
from .log import warn

ERROR_KINDS = ("vanishing", "duplicate", "extra_object", "color_change", "morphing", "teleport",
               "speed_change", "wall_pass", "bad_bounce")
MNIST_KINDS = ("vanishing", "duplicate")
# Checked only for prompts with the occluder suffix, so every other verdict keeps ERROR_KINDS.
OCCLUDER_KINDS = ERROR_KINDS + ("permanence",)
# "Intact": no object vanishing, splitting, morphing or jumping. Looser than a pass, which also
# rules out speed changes, bad bounces and the rest.
INTACT_KINDS = ("vanishing", "duplicate", "morphing", "teleport")

# Foreground: brightest channel >= FG_FRACTION x clip peak. About half the peak keeps the area of
# a blurred edge unchanged (a symmetric blur crosses half height at the true edge).
FG_FRACTION = 0.45
FG_RANGE = (40, 128)  # clamp: codec noise on black stays below 40; a white clip needs no more
NOISE_AREA = 0.0015  # blobs under this fraction of the frame (6 px at 64x64) are noise
SIGNIFICANT = 0.35  # a blob counts as an object at >= 0.35 x the object's typical area
# A blob holding two colours of >= 20% each is two touching objects (colours the prompt names
# split from 1 px). Codec fringe stays below: H.264 chroma subsampling whitens 5-12% of a small
# object's edge.
SPLIT_SHARE = 0.2
MORPH_AREA = 0.35  # blur, codecs and rasterisation move a 64 px clip's areas by ~10%
# Shape cuts, measured on renders at 32-96 px, crisp and 3x3-box-blurred: triangles balance
# 0.33-0.56 and circles 0.74-1.35; circles fill 0.73-0.91 and squares 0.97-1 (0.84-0.99 through
# the bundled VAE, where circles stay <= 0.88). A shape is "clear" (able to flag morphing) only
# well inside its cut.
TRIANGLE_BALANCE, CLEAR_TRIANGLE, CLEAR_ROUND = 0.66, 0.6, 0.8
SQUARE_FILL, CLEAR_CIRCLE, CLEAR_SQUARE = 0.92, 0.88, 0.94
MIN_MOVE = 0.02  # below 2% of the frame (or 1 px) over the first quarter: "still"
# A jump: velocity off the previous one by > max(10% of the shorter side, 1.5 x speed), plus
# 2 x speed at a wall, where an elastic bounce legitimately reverses it.
TELEPORT_SPEEDS, TELEPORT_FLOOR = 1.5, 0.1
SPEED_TOL, SPEED_FLOOR = 0.5, 1.5  # speed off by 50% and 1.5 px (crisp renders jitter by 1 px)
# An object at a wall with < 85% of its area is cut by the frame edge: at the slowest speed
# (extent / 32 px/frame) a 1/4-extent object loses >= 17% within two frames of crossing.
CLIPPED_AREA = 0.85
MAX_SIDE = 128  # larger clips are downscaled before critique (`downscale_for_critic`)
# Moving MNIST draws its digit grey (R = G = B); a blob whose mean colour spreads its channels by
# more than this (of 255) is a coloured object, not a digit (codecs shift grey by a few levels).
GREY_SPREAD = 40
WALL_SLACK = 2.0  # px of tolerance on "at the wall" (blur and rounding move a box edge 1 px)
# The occluder is drawn (128, 128, 128): a pixel is bar when grey (channels within GREY_SPREAD)
# and in BAR_LEVELS (dimmed to half, or brightened by a codec, it stays inside) in at least half
# of the frames; moving objects never dwell there that long.
BAR_LEVELS = (60, 200)
# An object predicted at least half outside the bar (after moving the prediction by its
# tolerance towards the bar) must be seen.
VISIBLE_SHARE = 0.5

_UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # walking into a wall
_SHAPE_RE = re.compile(r"an? (\w+) (\w+) (?:moving|moves) (\w+)")
_OCCLUDER_RE = re.compile(r" behind an? gr[ae]y bar$")  # OCCLUDER_SUFFIX, either spelling
_DIGIT_RE = re.compile(r"the digit (\d) (?:moving|moves) (\w+)")
GRAMMAR = ("'a red circle moving left' (optionally '... and a blue square moving up', then "
           "optionally ' behind a gray bar') or 'the digit 7 moving left'")


@dataclass(frozen=True)
class Target:
    """One object named by a prompt."""

    direction: str
    color: str | None = None  # shapes world
    shape: str | None = None
    digit: int | None = None  # Moving MNIST

    def __str__(self) -> str:
        what = f"digit {self.digit}" if self.digit is not None else f"{self.color} {self.shape}"
        return f"{what} moving {self.direction}"


def _normalize(prompt: str) -> str:
    return " ".join(prompt.lower().replace(",", " ").split()).rstrip(".").strip()


def has_occluder(prompt: str) -> bool:
    """Whether a prompt ends with the occluder suffix (' behind a gray bar')."""
    return bool(_OCCLUDER_RE.search(_normalize(prompt)))


def parse_prompt(prompt: str) -> list[Target]:
    """Parse a shapes-world or Moving-MNIST prompt into its objects (UserError otherwise)."""
    text = _normalize(prompt)
    occluded = bool(_OCCLUDER_RE.search(text))
    text = _OCCLUDER_RE.sub("", text)
    targets = []
    for part in text.split(" and "):
        if m := _SHAPE_RE.fullmatch(part):
            for kind, value, valid in zip(("color", "shape", "direction"), m.groups(),
                                          (COLORS, SHAPES, DIRECTIONS)):
                if value not in valid:
                    raise UserError(f"unknown {kind} {value!r} in prompt {prompt!r}; "
                                    f"known: {', '.join(valid)}")
            targets.append(Target(m[3], color=m[1], shape=m[2]))
        elif (m := _DIGIT_RE.fullmatch(part)) and m[2] in DIRECTIONS:
            targets.append(Target(m[2], digit=int(m[1])))
        else:
            raise UserError(f"cannot parse prompt {prompt!r}: expected {GRAMMAR}")
    if len({t.digit is None for t in targets}) > 1:
        raise UserError(f"prompt {prompt!r} mixes shapes and digits; expected {GRAMMAR}")
    if occluded and targets[0].digit is not None:
        raise UserError(f"cannot parse prompt {prompt!r}: the gray bar belongs to the shapes "
                        f"world; expected {GRAMMAR}")
    return targets


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------


def _shifts(mask: np.ndarray, fill) -> list[np.ndarray]:
    """The 3x3 neighbourhood of every pixel of (N, H, W), as 9 shifted views (border = fill)."""
    _, h, w = mask.shape
    pad = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=fill)
    return [pad[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]


def label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected labels of a bool (..., H, W) mask per 2D slice; 0 = background, ids unique."""
    m = mask.reshape(-1, *mask.shape[-2:]).astype(bool)
    big = m.size  # "no label": larger than every pixel index
    lab = np.where(m, np.arange(m.size).reshape(m.shape), big)
    fg = np.flatnonzero(m)
    while True:
        new = np.minimum.reduce(_shifts(lab, big))  # min label over the 3x3 neighbourhood
        new[~m] = big
        flat = new.reshape(-1)
        # Pointer jumping: a label is a pixel index of the same blob, whose own label is smaller
        # still; following it collapses long chains in log(steps) passes instead of one per pixel.
        while not np.array_equal(jumped := flat[flat[fg]], flat[fg]):
            flat[fg] = jumped
        if np.array_equal(new, lab):
            break
        lab = new
    out = np.zeros(m.size, np.int64)
    out[fg] = np.unique(lab.reshape(-1)[fg], return_inverse=True)[1] + 1
    return out.reshape(mask.shape)


@dataclass
class Component:
    """A connected blob of one colour in one frame."""

    frame: int
    area: int
    center: tuple[float, float]  # (x, y) centroid
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1), inclusive pixel indices
    rgb: tuple[int, int, int]  # mean colour
    color: str  # nearest named colour
    fill: float  # brightness-weighted area / (widest row x tallest column), see _fill
    balance: float  # pixels in the top half of the box / pixels in the bottom half
    shape: str  # circle, square or triangle
    clear: bool  # far enough from the cuts to be sure of the shape
    joined: bool = False  # cut from a blob shared with another colour (touching another object)


def _classify(fill: float, balance: float) -> tuple[str, bool]:
    """Shape from fill and top/bottom balance, and whether it is clear of the cuts."""
    if balance < TRIANGLE_BALANCE:  # apex up: the top half holds a third of the bottom's mass
        return "triangle", balance < CLEAR_TRIANGLE
    round_ = balance > CLEAR_ROUND
    if fill >= SQUARE_FILL:
        return "square", round_ and fill >= CLEAR_SQUARE
    return "circle", round_ and 0.65 <= fill <= CLEAR_CIRCLE


def _fill(value: np.ndarray, inv: np.ndarray, starts: np.ndarray, area: np.ndarray,
          xs: np.ndarray, ys: np.ndarray, h: int, w: int) -> np.ndarray:
    """Fill of each pixel group: its coverage over (widest row's x tallest column's coverage).

    A pixel's coverage is its brightness over its group's median brightness, capped at 1, so a
    blurred edge counts in part, and on the same footing in the area and in the extents. A crisp
    square fills 1, a circle pi/4 and a triangle 1/2, as they fill their bounding box; but a faint
    fringe row, a few pixels just over the foreground cut, adds only their coverage, where it added
    a whole row to the box (VAE reconstructions of rendered squares: 10 of 204 frames read as clear
    circles by the box, none by coverage). Scaling an object's brightness leaves it unchanged.
    """
    by_value = np.lexsort((value, inv))  # grouped like `starts`, ascending value within a group
    level = value[by_value][starts + area // 2]  # each group's median brightness
    cover = np.minimum(value / np.maximum(level[inv], 1.0), 1.0)
    n = len(area)
    mass = np.bincount(inv, cover, minlength=n)
    row = np.bincount(inv * h + ys, cover, minlength=n * h).reshape(n, h).max(1)
    col = np.bincount(inv * w + xs, cover, minlength=n * w).reshape(n, w).max(1)
    return mass / np.maximum(row * col, 1e-6)


def segment(frames: np.ndarray, merge_radius: int = 0, split_colors: bool = True,
            expected: tuple[str, ...] = (), hide: np.ndarray | None = None
            ) -> list[list[Component]]:
    """Components of every frame of uint8 (T, H, W, 3), noise-sized blobs dropped.

    A blob is split by colour when it holds two sizeable colours; any pixels of a colour in
    `expected` (the prompt's) count, so a sliver of an occluded object never joins the other.
    Pixels of the bool (H, W) `hide` (the occluder) are background in every frame.
    """
    n, h, w, _ = frames.shape
    v = np.maximum(np.maximum(frames[..., 0], frames[..., 1]), frames[..., 2])  # (T, H, W)
    peak = float(np.median(v.reshape(n, -1).max(1)))
    fg = v >= np.clip(FG_FRACTION * peak, *FG_RANGE)
    if hide is not None:
        fg &= ~hide
    names = list(COLORS)
    palette = np.array([COLORS[c] for c in names], np.float32)
    palette /= palette.max(1, keepdims=True)
    t, ys, xs = np.nonzero(fg)
    rgb = frames[t, ys, xs].astype(np.float32)  # (N, 3)
    hue = rgb / np.maximum(rgb.max(1), 1)[:, None]  # brightness divided out
    code = ((hue[:, None] - palette[None]) ** 2).sum(-1).argmin(1)  # (N,) palette index
    grow = fg
    for _ in range(merge_radius):  # dilate so that a digit's broken strokes form one blob
        grow = np.logical_or.reduce(_shifts(grow, False))
    blob = label_components(grow)[t, ys, xs]
    p, noise = len(names), max(4.0, NOISE_AREA * h * w)
    group = blob * p  # one group per blob, unless it holds two sizeable colours
    if split_colors and len(blob):
        keys, inv, counts = np.unique(blob * p + code, return_inverse=True, return_counts=True)
        wanted = np.isin(keys % p, [names.index(c) for c in expected])
        share = np.where(wanted, 0.0, SPLIT_SHARE) * np.bincount(blob)[keys // p]
        major = counts >= np.where(wanted, 1, np.maximum(share, noise))
        split = np.bincount(keys // p, weights=major, minlength=blob.max() + 1) >= 2
        keep = ~split[blob] | major[inv]  # minor colours of a split blob are edge fringe
        group = np.where(split[blob], blob * p + code, group)[keep]
        joined_pixels = split[blob][keep]
        t, ys, xs, rgb, code = t[keep], ys[keep], xs[keep], rgb[keep], code[keep]
    else:
        joined_pixels = np.zeros(len(group), bool)
    if not len(group):
        return [[] for _ in range(n)]
    _, inv = np.unique(group, return_inverse=True)
    area = np.bincount(inv)
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(area)[:-1]])
    box = [f.reduceat(a[order], starts) for f, a in
           ((np.minimum, xs), (np.minimum, ys), (np.maximum, xs), (np.maximum, ys))]
    cx, cy = np.bincount(inv, xs) / area, np.bincount(inv, ys) / area
    mean = np.stack([np.bincount(inv, rgb[:, c]) / area for c in range(3)], 1)
    fill = _fill(v[t, ys, xs].astype(np.float32), inv, starts, area, xs, ys, h, w)
    mid = (box[1] + box[3])[inv] / 2  # vertical middle of each pixel's box
    top = np.bincount(inv, (ys < mid) + 0.5 * (ys == mid))
    votes = np.bincount(inv * p + code, minlength=len(area) * p).reshape(-1, p).argmax(1)
    out: list[list[Component]] = [[] for _ in range(n)]
    for g in np.flatnonzero(area >= noise):
        x0, y0, x1, y1 = (int(b[g]) for b in box)
        balance = top[g] / max(area[g] - top[g], 0.5)
        shape, clear = _classify(fill[g], balance)
        frame = int(t[order[starts[g]]])
        out[frame].append(Component(
            frame, int(area[g]), (float(cx[g]) + 0.5, float(cy[g]) + 0.5), (x0, y0, x1, y1),
            tuple(int(round(c)) for c in mean[g]), names[votes[g]], float(fill[g]), float(balance),
            shape, clear, bool(joined_pixels[order[starts[g]]])))
    return out


# --------------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------------

Track = list  # list[Component | None], one entry per frame


def _predict(track: Track, t: int) -> np.ndarray | None:
    """Constant-velocity guess of the position at frame t from the last two sightings before t."""
    seen = [c for c in track[:t] if c is not None][-2:]
    if not seen:
        return None
    last = np.array(seen[-1].center)
    if len(seen) == 1:
        return last
    v = (last - seen[0].center) / (seen[1].frame - seen[0].frame)
    return last + v * (t - seen[1].frame)


def _track(candidates: list[list[Component]], k: int) -> list[Track]:
    """Follow k objects: each frame, match predictions greedily to the nearest candidates."""
    tracks: list[Track] = [[None] * len(candidates) for _ in range(k)]
    for t, cands in enumerate(candidates):
        cands = sorted(cands, key=lambda c: -c.area)
        preds = [_predict(tr, t) for tr in tracks]
        pairs = sorted((float(np.hypot(*(p - c.center))), i, j) for i, p in enumerate(preds)
                       if p is not None for j, c in enumerate(cands))
        free = list(range(len(cands)))
        for _, i, j in pairs:
            if tracks[i][t] is None and j in free:
                tracks[i][t] = cands[j]
                free.remove(j)
        for i, p in enumerate(preds):  # tracks not started yet take the largest leftovers
            if p is None and free:
                tracks[i][t] = cands[free.pop(0)]
    return tracks


def _significant(cands: list[list[Component]]) -> list[list[Component]]:
    """Keep blobs >= SIGNIFICANT x the typical largest blob (drops fringe and debris)."""
    largest = [max(c.area for c in f) for f in cands if f]
    floor = SIGNIFICANT * float(np.median(largest)) if largest else 0.0
    return [[c for c in f if c.area >= floor] for f in cands]


def _median_speed(track: Track) -> float:
    """Median px/frame between consecutive sightings."""
    seen = [c for c in track if c is not None]
    steps = [np.hypot(*np.subtract(b.center, a.center)) / (b.frame - a.frame)
             for a, b in zip(seen, seen[1:])]
    return float(np.median(steps)) if steps else 0.0


def _observe(track: Track, t_count: int, h: int, w: int, usable: list[bool] | None = None,
             moving: list[bool] | None = None) -> tuple[str, str]:
    """(majority shape, direction over frames 0..ceil(T / 4), from `moving` frames) of a track."""
    seen = [c for i, c in enumerate(track) if c is not None and (usable is None or usable[i])]
    seen = seen or [c for c in track if c is not None]
    clear = [c.shape for c in seen if c.clear] or [c.shape for c in seen] or ["unseen"]
    shape = Counter(clear).most_common(1)[0][0]
    early = [c for i, c in enumerate(track[:math.ceil(t_count / 4) + 1])
             if c is not None and (moving is None or moving[i])]
    if len(early) < 2:
        return shape, "unseen"
    dx, dy = np.subtract(early[-1].center, early[0].center)
    if max(abs(dx), abs(dy)) < max(1.0, MIN_MOVE * min(h, w)):
        return shape, "still"
    if abs(dx) >= abs(dy):
        return shape, "right" if dx > 0 else "left"
    return shape, "down" if dy > 0 else "up"


def _follow(comps: list[list[Component]], targets: list[Target], h: int, w: int):
    """Tracks (one per target), per-target colour-change frames, and the set of used blob ids."""
    n, mnist = len(comps), targets[0].digit is not None
    tracks: list[Track] = [[None] * n for _ in targets]
    for color in dict.fromkeys(t.color for t in targets):  # one tracker per colour group
        members = [i for i, t in enumerate(targets) if t.color == color]
        cands = _significant([[c for c in f if mnist or c.color == color] for f in comps])
        found = _track(cands, len(members))
        # Give same-colour tracks to targets by best agreement on shape and direction.
        for i in members:
            score = [sum(a == b for a, b in zip(_observe(tr, n, h, w),
                                                (targets[i].shape, targets[i].direction)))
                     for tr in found]
            tracks[i] = found.pop(int(np.argmax(score)))
    used = {id(c) for tr in tracks for c in tr if c is not None}
    recolored = [[] for _ in targets]
    others = {t.color for t in targets}
    for i, tr in enumerate(tracks):
        if mnist:
            continue
        spare = [[c for c in f if id(c) not in used and c.color not in others] for f in comps]
        if all(c is None for c in tr):  # never seen in its colour: follow whatever is there
            tr[:] = _track(_significant(spare), 1)[0]
            major = Counter(c.color for c in tr if c is not None).most_common(1)
            recolored[i] = [t for t, c in enumerate(tr) if c is not None and c.color != major[0][0]]
        else:  # gaps filled by an other-coloured blob of the same size where the object should be
            ref = float(np.median([c.area for c in tr if c is not None]))
            gate = max(3 * _median_speed(tr), 0.15 * min(h, w))
            for t in range(n):
                pred = _predict(tr, t) if tr[t] is None else None
                near = [c for c in spare[t] if SIGNIFICANT <= c.area / ref <= 1 / SIGNIFICANT
                        and pred is not None and np.hypot(*(pred - c.center)) <= gate]
                if near:
                    tr[t] = min(near, key=lambda c: np.hypot(*(pred - c.center)))
                    recolored[i].append(t)
        used |= {id(c) for c in tr if c is not None}
    return tracks, recolored, used


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _touches(a: Component, b: Component, margin: int = 1) -> bool:
    """Whether two bounding boxes overlap or lie within `margin` px of each other."""
    return (a.bbox[0] <= b.bbox[2] + margin and b.bbox[0] <= a.bbox[2] + margin
            and a.bbox[1] <= b.bbox[3] + margin and b.bbox[1] <= a.bbox[3] + margin)


def _wall_gaps(c: Component, h: int, w: int) -> dict[str, int]:
    """Pixels between the blob and each wall, keyed by the direction that walks into it."""
    x0, y0, x1, y1 = c.bbox
    return {"left": x0, "right": w - 1 - x1, "up": y0, "down": h - 1 - y1}


def _motion_errors(track: Track, usable: list[bool], clean: list[bool], h: int,
                   w: int, close: list[bool] | None = None) -> dict[str, set[int]]:
    """Teleport, speed, bounce and wall errors of one track (frames where each happens).

    Positions come from `usable` frames; speed is judged only between `clean` ones (touching
    nothing), since a centroid shifted by a blended neighbour fakes a 1-2 px speed change.
    `close` marks frames close enough to the other object to have bounced off it in the step
    before or after: there a velocity change is allowed like at a wall, and the speed is judged
    against the median of its own stretch between such contacts (equal masses swap speeds).
    """
    close = close or [False] * len(track)
    errors: dict[str, set[int]] = {k: set() for k in ("teleport", "speed_change", "bad_bounce",
                                                      "wall_pass")}
    idx = [t for t in range(len(track)) if usable[t]]
    steps = [(a, b, np.subtract(track[b].center, track[a].center) / (b - a))
             for a, b in zip(idx, idx[1:])]
    if not steps:
        return errors
    med = float(np.median([np.hypot(*v) for _, _, v in steps]))
    jump = max(TELEPORT_SPEEDS * med, TELEPORT_FLOOR * min(h, w))
    walled = [min(_wall_gaps(c, h, w).values()) <= med + WALL_SLACK if c else False for c in track]
    prev = np.median([v for _, _, v in steps[:3]], axis=0)  # robust start velocity
    jumps, unseen = set(), {i for i, (a, b, _) in enumerate(steps) if b - a > 1}
    for i, (a, b, v) in enumerate(steps):
        if i in unseen:  # a jump across unseen frames can't be told from a bounce; they vanished
            prev = None
        elif prev is None:
            prev = v
        elif (np.hypot(*(v - prev)) > jump + (2 * med if walled[a] or walled[b] or close[a]
                                              or close[b] else 0.0)
              # Turning back at about the same speed is a reversal, judged as a bounce below.
              and np.hypot(*(v + prev)) > max(SPEED_TOL * np.hypot(*prev), SPEED_FLOOR)):
            jumps.add(i)
            errors["teleport"].add(b)
            gaps_a, gaps_b = _wall_gaps(track[a], h, w), _wall_gaps(track[b], h, w)
            near = 2 * med + WALL_SLACK
            if any(gaps_a[d] <= near and gaps_b[OPPOSITE[d]] <= near for d in _UNIT):
                errors["wall_pass"].add(b)  # wrapped around to the opposite wall
        else:
            prev = v
    # Reversals along the main axis of motion must happen at the wall being walked into.
    axis = int(np.argmax(np.abs([v for i, (_, _, v) in enumerate(steps) if i not in jumps]
                                or [steps[0][2]]).sum(0)))
    moving = [(i, np.sign(v[axis])) for i, (_, _, v) in enumerate(steps)
              if i not in jumps and abs(v[axis]) > max(0.3 * med, 0.25)]
    bounce = set()
    for (i, si), (j, sj) in zip(moving, moving[1:]):
        if si == sj:
            continue
        bounce |= set(range(i, j + 1))
        wall = ("right" if si > 0 else "left") if axis == 0 else ("down" if si > 0 else "up")
        span = range(steps[i][0], steps[j][1] + 1)
        gap = min(_wall_gaps(track[t], h, w)[wall] for t in span if usable[t])
        # A reversal inside unseen frames (missing, occluded) cannot be placed: not judged.
        if (gap > 1.5 * med + WALL_SLACK and all(usable[t] for t in span)
                and not any(close[t] for t in span)):  # a bounce off the other object is fine
            errors["bad_bounce"].add(steps[i][1])
    # The first and last steps may hold a bounce whose reversal falls outside the clip.
    for i in {0, len(steps) - 1}:
        a, b, _ = steps[i]
        walls = ("left", "right") if axis == 0 else ("up", "down")
        if min(_wall_gaps(track[t], h, w)[d] for t in (a, b) for d in walls) <= med + WALL_SLACK:
            bounce.add(i)
    contact = {i for i, (a, b, _) in enumerate(steps) if close[a] or close[b]}
    stretch = np.cumsum([i in contact for i in range(len(steps))])  # stretches between contacts
    steady = [i for i in range(len(steps)) if i not in jumps | bounce | unseen | contact]
    speed = float(np.median([np.hypot(*steps[i][2]) for i in steady])) if steady else med
    own = {k: float(np.median([np.hypot(*steps[i][2]) for i in steady if stretch[i] == k]))
           for k in {stretch[i] for i in steady}} if contact else {}
    for i in (i for i in steady if clean[steps[i][0]] and clean[steps[i][1]]):
        ref = own.get(stretch[i], speed)
        if abs(np.hypot(*steps[i][2]) - ref) > max(SPEED_TOL * ref, SPEED_FLOOR):
            errors["speed_change"].add(steps[i][1])
    return errors


@dataclass
class Attribute:
    """One prompt attribute: what was asked, what was seen, and whether they agree (None: n/a)."""

    expected: str
    observed: str
    ok: bool | None


@dataclass
class ObjectReport:
    """Verdict on one prompt object."""

    target: str
    color: Attribute
    shape: Attribute
    direction: Attribute
    errors: dict[str, list[int]]  # error kind -> frames where it happens
    centers: list[tuple[float, float] | None]  # tracked (x, y) per frame
    areas: list[int | None]


@dataclass
class Critique:
    """The critic's verdict on one clip."""

    prompt: str
    world: str  # "shapes" or "mnist"
    size: tuple[int, int, int]  # (frames, height, width)
    objects: list[ObjectReport]
    clip_errors: dict[str, list[int]] = field(default_factory=dict)  # not tied to one object
    checked: tuple[str, ...] = ERROR_KINDS

    @property
    def errors(self) -> dict[str, list[int]]:
        """Every checked error kind -> sorted frames where it happens (any object)."""
        merged = {k: set(self.clip_errors.get(k, ())) for k in self.checked}
        for obj in self.objects:
            for k, frames in obj.errors.items():
                merged[k] |= set(frames)
        return {k: sorted(v) for k, v in merged.items()}

    @property
    def adherence(self) -> dict[str, bool | None]:
        """Per attribute: all objects right (True), one wrong (False), or not applicable (None)."""
        out = {}
        for name in ("color", "shape", "direction"):
            oks = [getattr(o, name).ok for o in self.objects if getattr(o, name).ok is not None]
            out[name] = all(oks) if oks else None
        return out

    @property
    def followed(self) -> bool:
        """True when every applicable attribute (color, shape, direction) is right."""
        return all(v is not False for v in self.adherence.values())

    @property
    def intact(self) -> bool:
        """True when no object vanishes, duplicates, morphs or teleports (INTACT_KINDS)."""
        return not any(self.errors.get(k) for k in INTACT_KINDS)

    @property
    def passed(self) -> bool:
        """True when every applicable attribute is right and no error was found."""
        return self.followed and not any(self.errors.values())

    def to_dict(self) -> dict:
        """Plain JSON-ready dict, including the derived verdicts."""
        d = asdict(self)
        d.update(passed=self.passed, followed=self.followed, intact=self.intact,
                 adherence=self.adherence, errors=self.errors)
        return d

    def summary(self) -> str:
        """Human-readable multi-line verdict."""
        t, h, w = self.size
        lines = [f"{'PASS' if self.passed else 'FAIL'}  {self.prompt!r}  "
                 f"({t} frames, {h}x{w}, {self.world} world)"]
        for o in self.objects:
            parts = []
            for name in ("color", "shape", "direction"):
                a = getattr(o, name)
                mark = "n/a" if a.ok is None else "ok" if a.ok else f"WRONG (saw {a.observed})"
                parts.append(f"{name} {a.expected} {mark}" if a.ok is not None else
                             f"{name} {a.expected} {a.observed}" if a.expected != "n/a" else
                             f"{name} n/a")
            lines.append(f"  {o.target}: " + ", ".join(parts))
        bad = {k: v for k, v in self.errors.items() if v}
        for k, frames in bad.items():
            lines.append(f"  {k}: frame{'s' if len(frames) > 1 else ''} "
                         + ", ".join(map(str, frames)))
        if not bad:
            lines.append("  no physics errors (" + ", ".join(self.checked) + ")")
        return "\n".join(lines)


def _check_frames(frames) -> np.ndarray:
    """The frames as a uint8 (T, H, W, 3) array, or a one-line ValueError."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not frames.size:
        raise UserError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def critique(frames: np.ndarray, prompt: str) -> Critique:
    """Judge uint8 (T, H, W, 3) frames against a shapes-world or Moving-MNIST prompt."""
    targets = parse_prompt(prompt)
    frames = _check_frames(frames)
    n, h, w, _ = frames.shape
    mnist = targets[0].digit is not None
    occluded = has_occluder(prompt)
    bar = find_bar(frames) if occluded else None
    # Bar pixels, and one more pixel around them where a blurred edge blends, are background.
    hide = None if bar is None else np.logical_or.reduce(_shifts(bar[None], False))[0]
    # A digit's strokes may break at the threshold; merge blobs within ~3% of the frame.
    comps = segment(frames, merge_radius=max(1, round(0.03 * min(h, w))) if mnist else 0,
                    split_colors=not mnist, expected=tuple(t.color for t in targets if t.color),
                    hide=hide)
    tracks, recolored, used = _follow(comps, targets, h, w)
    clip_errors: dict[str, set[int]] = {"extra_object": set()}
    dups: list[set[int]] = [set() for _ in targets]
    box = None if hide is None else _mask_box(hide)
    refs = [np.median([c.area for c in tr if c is not None] or [0]) for tr in tracks]
    floor = SIGNIFICANT * min(refs)
    for t, frame in enumerate(comps):
        matched = [tr[t] for tr in tracks if tr[t] is not None]
        for c in frame:
            if id(c) in used or c.area < floor:
                continue
            owners = [i for i, tg in enumerate(targets) if mnist or tg.color == c.color]
            if not owners:
                clip_errors["extra_object"].add(t)
            # A same-coloured leftover touching a tracked object is a fragment of an object
            # (cut by the other one in front, or a digit's broken stroke), not a copy.
            elif not any(_touches(c, m) for m in matched):
                for i in owners:
                    # A part cut by the bar while the object is behind it is that object.
                    if box is None or _box_gap(c.bbox, box) > 0 or not (
                            tracks[i][t] is None or _box_gap(tracks[i][t].bbox, box) <= 0):
                        dups[i].add(t)
    reports = [_report(tg, tracks, i, recolored[i], dups[i], comps, h, w, mnist, occluded, box)
               for i, tg in enumerate(targets)]
    return Critique(prompt, "mnist" if mnist else "shapes", (n, h, w), reports,
                    {} if mnist else {k: sorted(v) for k, v in clip_errors.items()},
                    MNIST_KINDS if mnist else OCCLUDER_KINDS if occluded else ERROR_KINDS)


_MOVING_RE = re.compile(r"\b(moving|moves) (%s)\b" % "|".join(DIRECTIONS), re.IGNORECASE)


def moving_now(prompt: str, at: str = "end") -> Callable[[np.ndarray], str]:
    """A reader of the way objects move (`Task.continuation_prompt`, generate's
    --follow-motion): for frames (G, H, W, 3), `prompt` with each object's direction replaced
    by the one it moves in at their end (`at="start"`: at their start, the step a fresh clip's
    caption states), as the critic tracks it (the prompt's own where that step does not say:
    unseen, or moving under half a pixel per frame along the prompt's axis). A caption's
    direction is the one at its clip's start, so a long clip's window that starts after a
    bounce is prompted with the way the object goes now."""
    if at not in ("start", "end"):
        raise ValueError(f"at must be 'start' or 'end', got {at!r}")
    targets = parse_prompt(prompt)

    def read(frames: np.ndarray) -> str:
        objects = critique(frames, prompt).objects
        now = iter([_direction_of_step(o.centers, t.direction, at == "end")
                    for t, o in zip(targets, objects)])
        return _MOVING_RE.sub(lambda m: f"{m[1]} {next(now)}", prompt)

    return read


def _direction_of_step(centers: list[tuple[float, float] | None], direction: str,
                       last: bool) -> str:
    """The direction, on the axis of `direction`, of the last (or first) step an object is seen
    in."""
    seen = [(t, np.array(c)) for t, c in enumerate(centers) if c is not None]
    seen = seen[-2:] if last else seen[:2]
    if len(seen) < 2:
        return direction
    (t0, a), (t1, b) = seen[0], seen[-1]
    axis = np.array(_UNIT[direction])
    along = float((b - a) @ np.abs(axis)) / (t1 - t0)  # px/frame, + is right or down
    if abs(along) < 0.5:
        return direction
    if axis.sum() * along > 0:
        return direction
    return OPPOSITE[direction]


def find_bar(frames: np.ndarray) -> np.ndarray | None:
    """Bool (H, W) mask of the occluder: the largest blob of pixels grey and mid-bright in at
    least half of the frames (a gray component that does not move), or None."""
    n, h, w, _ = frames.shape
    v, lo = frames.max(-1).astype(np.int16), frames.min(-1).astype(np.int16)
    grey = (v - lo <= GREY_SPREAD) & (v >= BAR_LEVELS[0]) & (v <= BAR_LEVELS[1])
    static = grey.mean(0) >= 0.5  # (H, W)
    if static.sum() < max(4.0, NOISE_AREA * h * w):
        return None
    lab = label_components(static)
    return lab == np.bincount(lab.reshape(-1))[1:].argmax() + 1


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) inclusive pixel box of a bool (H, W) mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _hidden(track: Track, t: int, others: list[Track], frame: list[Component],
            color: str | None) -> bool:
    """Whether missing frame t is explained by another object in front of this one."""
    seen = [s for s, c in enumerate(track) if c is not None]
    before, after = [s for s in seen if s < t][-1:], [s for s in seen if s > t][:1]
    if before and after:  # interpolate between sightings, else extrapolate the last two
        a, b = np.array(track[before[0]].center), np.array(track[after[0]].center)
        pos = a + (b - a) * ((t - before[0]) / (after[0] - before[0]))
    elif seen:
        pos = _predict(track, t) if before else np.array(track[after[0]].center)
    else:
        return False
    area = float(np.median([track[s].area for s in seen]))
    pad = 1 + 0.25 * math.sqrt(area)  # a centre this close to the box can be covered
    covering = [o[t] for o in others if o[t] is not None]
    if any(o.bbox[0] - pad <= pos[0] - 0.5 <= o.bbox[2] + pad
           and o.bbox[1] - pad <= pos[1] - 0.5 <= o.bbox[3] + pad for o in covering):
        return True
    # A sliver of its colour against another object also says "behind it", not "gone".
    return color is not None and any(d.color == color and _touches(d, o)
                                     for d in frame for o in covering)


def _box_gap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Background pixels between two inclusive boxes (Chebyshev; 0 adjacent, < 0 overlapping)."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3]) - 1


def _near_other(track: Track, others: list[Track]) -> list[bool]:
    """Frames where another object is close enough to have bounced off this one within a step
    (box gap at most both speeds plus slack) without overlapping it (objects that collide never
    overlap; ones that pass through each other do)."""
    if not others:
        return [False] * len(track)
    speed = _median_speed(track)
    out = []
    for t, c in enumerate(track):
        gaps = [(_box_gap(c.bbox, o[t].bbox), _median_speed(o)) for o in others
                if c is not None and o[t] is not None]
        out.append(any(-2 <= g <= speed + s + WALL_SLACK for g, s in gaps))
    return out


def _fold(x: float, lo: float, hi: float) -> float:
    """Reflect x into [lo, hi] as elastic bounces off both ends do."""
    if hi <= lo:
        return lo
    q = (x - lo) % (2 * (hi - lo))
    return lo + (q if q <= hi - lo else 2 * (hi - lo) - q)


def _visible_share(center: np.ndarray, half: np.ndarray, bar: tuple[int, int, int, int],
                   tol: float, walls) -> float:
    """The smallest share of a box (center +- half) outside the bar, the box moved by up to tol
    on each axis in 1 px steps (and kept inside the walls, as the object is)."""
    lo, hi = np.array(bar[:2], float), np.array(bar[2:], float) + 1
    k = int(math.ceil(tol))
    shifts = np.linspace(-tol, tol, 2 * k + 1)
    c = center[None, None] + np.stack(np.meshgrid(shifts, shifts, indexing="ij"), -1)
    c = np.clip(c, [walls[0][0], walls[1][0]], [walls[0][1], walls[1][1]])  # (S, S, 2)
    inter = np.clip(np.minimum(c + half, hi) - np.maximum(c - half, lo), 0, None).prod(-1)
    return float(1 - inter.max() / max(float((2 * half).prod()), 1e-6))


def _permanence(track: Track, covered: list[bool], contact: list[bool],
                bar: tuple[int, int, int, int], shape: str, recolored: list[int], hidden,
                h: int, w: int) -> tuple[set[int], set[int]]:
    """(missing frames explained by the bar, permanence errors) of one track.

    Each stretch of frames where the object is missing or cut by the bar is predicted from the
    last two whole sightings before it (their box centres: constant velocity, folded at the walls;
    a bounce between the two sightings is tried too and the hypothesis closest to the reappearance
    kept). Errors: missing while predicted at least VISIBLE_SHARE outside the bar (it did not come
    out), a visible part whose outer edge or extent is off the prediction, and a reappearance
    off the prediction by more than a teleport, in another colour, or clearly another shape.
    """
    n = len(track)
    gone = [c is None or b for c, b in zip(track, covered)]
    seen = [t for t in range(n) if not gone[t]]
    if not seen:
        return {t for t in range(n) if track[t] is None}, set()
    dims = np.median([(track[t].bbox[2] - track[t].bbox[0] + 1,
                       track[t].bbox[3] - track[t].bbox[1] + 1) for t in seen], axis=0)
    half = dims / 2
    walls = ((half[0], w - half[0]), (half[1], h - half[1]))
    normal = 0 if (bar[2] - bar[0] + 1) / w < (bar[3] - bar[1] + 1) / h else 1
    mid = (bar[normal] + bar[normal + 2] + 1) / 2
    behind, errors = set(), set()
    runs, t = [], 0
    while t < n:
        if gone[t]:
            b = t
            while b + 1 < n and gone[b + 1]:
                b += 1
            runs.append((t, b))
            t = b
        t += 1
    for a, b in runs:
        missing = [t for t in range(a, b + 1) if track[t] is None]
        before = [t for t in seen if t < a][-2:]
        r = b + 1 if b + 1 < n else None
        if len(before) < 2:  # no velocity: not judged, but hidden if it touched the bar
            if any(covered[a:b + 1]):
                behind |= set(missing)
            continue
        # Velocity over the longest stretch of steady steps before: box centres move in whole
        # pixels, so two sightings alone can be off by 1 px/frame.
        stretch = [t for t in seen if t < a and not contact[t]][-2:]
        stretch = stretch if len(stretch) == 2 and stretch[1] - stretch[0] <= 2 else before
        last = _step(track, *stretch)
        for t in reversed([t for t in seen if t < stretch[0]]):
            if contact[t] or np.hypot(*(_step(track, t, stretch[0]) - last)) > max(
                    SPEED_FLOOR, SPEED_TOL * np.hypot(*last)):
                break
            stretch.insert(0, t)
        f1, f2 = stretch[0], stretch[-1]
        p1, p2 = _box_center(track[f1]), _box_center(track[f2])
        v = (p2 - p1) / (f2 - f1)
        hypotheses = [(p2, v)]
        p1, speed = _box_center(track[stretch[-2]]), _median_speed([track[t] for t in seen])
        for i in (0, 1):  # a wall bounce between the last two sightings, at the usual speed
            for wall in walls[i]:
                if abs(p2[i] - wall) <= 2 * np.abs(v).max() + WALL_SLACK:
                    u = v.copy()
                    u[i] = -((2 * wall - p2[i]) - p1[i]) / (f2 - stretch[-2])
                    if abs(np.hypot(*u) - speed) <= max(SPEED_TOL * speed, SPEED_FLOOR):
                        hypotheses.append((p2, u))

        def predict(hyp, t):
            x = hyp[0] + hyp[1] * (t - f2)
            return np.array([_fold(x[0], *walls[0]), _fold(x[1], *walls[1])])

        if r is not None:
            hyp = min(hypotheses, key=lambda g: np.hypot(*(predict(g, r) - _box_center(track[r]))))
        else:
            hyp = hypotheses[0]
        # Tolerance: a teleport's, plus the drift of a velocity read to +-1 px over the stretch.
        base = max(TELEPORT_FLOOR * min(h, w), TELEPORT_SPEEDS * float(np.hypot(*hyp[1])))
        tols = {t: base + (t - f2) / (f2 - f1) for t in range(a, b + 2)}
        at_bar = [_visible_share(predict(hyp, t), half, bar, tols[t], walls) < 1 for t in missing]
        if not any(covered[a:b + 1]) and not any(at_bar):
            continue  # gone away from the bar: vanishing, judged as before
        behind |= set(missing)
        for t in missing:
            if not hidden(t) and _visible_share(predict(hyp, t), half, bar,
                                                tols[t], walls) >= VISIBLE_SHARE:
                errors.add(t)  # should be out from behind the bar by now
        for t in (t for t in range(a, b + 1) if track[t] is not None):
            c, p, tol = track[t], predict(hyp, t), tols[t]
            x0, y0, x1, y1 = c.bbox
            lo, hi = np.array([x0, y0], float), np.array([x1, y1], float) + 1
            side = 1 if (lo[normal] + hi[normal]) / 2 > mid else -1  # the part left of the bar
            outer = hi[normal] if side > 0 else lo[normal]
            off = abs(outer - (p[normal] + side * half[normal])) > tol
            along = 1 - normal
            off |= bool(lo[along] < p[along] - half[along] - tol
                        or hi[along] > p[along] + half[along] + tol)
            if off and not contact[t]:
                errors.add(t)
        if r is not None:
            c = track[r]
            moved = np.hypot(*(predict(hyp, r) - _box_center(c))) > tols[r] and not contact[r]
            if moved or r in recolored or (c.clear and c.shape != shape and not contact[r]):
                errors.add(r)
    return behind, errors


def _step(track: Track, a: int, b: int) -> np.ndarray:
    """Velocity (px/frame) of the box centre from frame a to frame b."""
    return (_box_center(track[b]) - _box_center(track[a])) / (b - a)


def _box_center(c: Component) -> np.ndarray:
    """(x, y) centre of a component's pixel box (the object's box centre, up to rounding)."""
    x0, y0, x1, y1 = c.bbox
    return np.array([(x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2])


def _exits(track: Track, vanished: set[int], h: int, w: int) -> set[int]:
    """First frames of vanishings right after walking into a wall, never to return there."""
    speed, out = _median_speed(track), set()
    for t in sorted(vanished):
        if t == 0 or track[t - 1] is None:
            continue
        gaps, step = _wall_gaps(track[t - 1], h, w), _predict(track, t) - track[t - 1].center
        back = next((c for c in track[t:] if c is not None), None)
        for wall, unit in _UNIT.items():
            # Coming back at the same wall is a flicker (only a vanishing); at the opposite
            # wall, or never, it went through.
            gone = back is None or (_wall_gaps(back, h, w)[OPPOSITE[wall]]
                                    < _wall_gaps(back, h, w)[wall])
            if np.dot(step, unit) > 0.3 * speed and gaps[wall] <= 2 * speed + WALL_SLACK and gone:
                out.add(t)
    return out


def _report(target: Target, tracks: list[Track], i: int, recolored: list[int], dups: set[int],
            comps: list[list[Component]], h: int, w: int, mnist: bool, occluded: bool = False,
            bar: tuple[int, int, int, int] | None = None) -> ObjectReport:
    """Adherence and physics of prompt object i from its track and everything else seen.

    `bar` is the box of the occluder's hidden pixels (the bar grown by 1 px), when there is one."""
    track, n = tracks[i], len(comps)
    others = [tr for j, tr in enumerate(tracks) if j != i]
    found = [c is not None for c in track]
    # Cut by the bar (touching its hidden pixels): no shape, area or position from that frame.
    covered = [c is not None and bar is not None and _box_gap(c.bbox, bar) <= 0
               for c in track]
    overlap = [c is not None and any(o[t] is not None and _touches(c, o[t]) for o in others)
               for t, c in enumerate(track)]
    # In contact with any other blob (e.g. the remnant of an object it hides, blended by blur):
    # its outline is not its own, so no shape or area verdict from that frame.
    contact = [c is not None and (c.joined or any(_touches(c, d) for d in comps[t] if d is not c))
               for t, c in enumerate(track)]
    at_wall = [c is not None and min(_wall_gaps(c, h, w).values()) == 0 for c in track]
    whole = [f and not o and not a and not b for f, o, a, b in zip(found, contact, at_wall,
                                                                   covered)]
    shape, direction = _observe(track, n, h, w, usable=whole,
                                moving=[not b for b in covered] if bar is not None else None)
    kinds = MNIST_KINDS if mnist else OCCLUDER_KINDS if occluded else ERROR_KINDS
    errors = {k: set() for k in kinds if k != "extra_object"}
    errors["duplicate"] = dups
    errors["vanishing"] = {t for t in range(n) if not found[t]
                           and not _hidden(track, t, others, comps[t], target.color)}
    if bar is not None:
        behind, errors["permanence"] = _permanence(
            track, covered, contact, bar, shape, recolored,
            lambda t: _hidden(track, t, others, comps[t], target.color), h, w)
        errors["vanishing"] -= behind
    color = shape_attr = Attribute("n/a", "n/a", None)
    if mnist:
        color = _grey(track)
        # Which digit was drawn is not judged (no digit classifier yet): said, not counted as right.
        shape_attr = Attribute(f"digit {target.digit}", "not checked", None)
    else:
        colors = Counter(c.color for c in track if c is not None).most_common(1)
        observed = colors[0][0] if colors else "unseen"
        color = Attribute(target.color, observed, observed == target.color)
        shape_attr = Attribute(target.shape, shape, shape == target.shape)
        errors["color_change"] = set(recolored)
        areas = [c.area for c, ok in zip(track, whole) if ok] or [c.area for c in track if c]
        ref = float(np.median(areas)) if areas else 0.0
        for t, c in enumerate(track):
            if whole[t] and (abs(c.area / ref - 1) > MORPH_AREA or (c.clear and c.shape != shape)):
                errors["morphing"].add(t)
            if at_wall[t] and not overlap[t] and not covered[t] and c.area < CLIPPED_AREA * ref:
                errors["wall_pass"].add(t)
        # Behind the other object a blob shrinks and its centroid shifts: no motion from it.
        usable = [f and not (o and c.area < 0.95 * ref) and not b
                  for f, o, c, b in zip(found, contact, track, covered)]
        clean = [f and not o and not b for f, o, b in zip(found, contact, covered)]
        near = _near_other(track, others)
        for k, v in _motion_errors(track, usable, clean, h, w, near).items():
            errors[k] |= v
        errors["wall_pass"] |= _exits(track, errors["vanishing"], h, w)
    return ObjectReport(
        str(target), color, shape_attr,
        Attribute(target.direction, direction, direction == target.direction)
        if n > 1 else Attribute(target.direction, "n/a", None),  # one frame: no motion
        {k: sorted(v) for k, v in errors.items()},
        [None if c is None else (round(c.center[0], 2), round(c.center[1], 2)) for c in track],
        [None if c is None else c.area for c in track])


def _grey(track: Track) -> Attribute:
    """A digit is drawn grey: the track's median colour must have channels within GREY_SPREAD."""
    seen = [c for c in track if c is not None]
    if not seen:
        return Attribute("grey", "unseen", False)
    rgb = np.median([c.rgb for c in seen], axis=0)
    if rgb.max() - rgb.min() <= GREY_SPREAD:
        return Attribute("grey", "grey", True)
    return Attribute("grey", Counter(c.color for c in seen).most_common(1)[0][0], False)


def critique_file(path: str | Path, prompt: str) -> Critique:
    """Read a video file (any format `read_video` takes) and critique it against `prompt`."""
    from .data.video import read_video

    parse_prompt(prompt)  # a bad prompt fails before any decoding
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such video file: {str(path)!r}")
    frames, _ = read_video(path)
    return critique(downscale_for_critic(frames), prompt)


def downscale_for_critic(frames: np.ndarray) -> np.ndarray:
    """Frames larger than MAX_SIDE pixels on a side, shrunk by a whole factor (block means), with
    a warning: the critic judges toy worlds drawn at 32-128 px, and its segmentation passes over
    every pixel (a 480x480, 80-frame clip took 553 s and 3 GB; at 120x120 it takes seconds)."""
    t, h, w, _ = frames.shape
    k = -(-max(h, w) // MAX_SIDE)  # ceil
    if k == 1:
        return frames
    h2, w2 = h // k, w // k
    blocks = frames[:, :h2 * k, :w2 * k].reshape(t, h2, k, w2, k, 3)
    small = blocks.mean((2, 4), dtype=np.float32).round().astype(np.uint8)
    warn(f"critiquing the {h}x{w} clip at {h2}x{w2} (downscaled {k}x; the critic judges "
         f"clips of up to {MAX_SIDE} px a side, where its worlds are drawn)")
    return small
