"""The shapes world's opt-in collisions and occluder, and the critic's checks for them: ground
truth passes; a missing, misplaced, late or recoloured reappearance from behind the bar is a
`permanence` error; a clone after a collision is a `duplicate`."""

import numpy as np
import pytest

from zoetrope.critic import ERROR_KINDS, OCCLUDER_KINDS, critique, has_occluder, parse_prompt
from zoetrope.data.shapes import (COLORS, OCCLUDER_RGB, OCCLUDER_SUFFIX, ShapesWorld,
                                  free_steps, render_clip, shape_mask, simulate)

SIZES = [(17, 64, 64), (17, 48, 80), (33, 64, 64)]
MODES = {"collide": dict(two_objects=True, collide=True), "occluder": dict(occluder=True),
         "both": dict(two_objects=True, collide=True, occluder=True),
         "two_behind": dict(two_objects=True, occluder=True)}


def masks(clip) -> list[np.ndarray]:
    """Each object's (T, H, W) pixels, drawn alone."""
    t, h, w, _ = clip.frames.shape
    return [np.stack([shape_mask(o.shape, *c, o.size, h, w) for c in o.centers])
            for o in clip.objects]


def redraw(clip, centers, start: int, color=None) -> np.ndarray:
    """A one-object occluder clip with its object redrawn at `centers` (None: absent) from frame
    `start`, the bar again in front."""
    obj, (t, h, w, _) = clip.objects[0], clip.frames.shape
    frames = clip.frames.copy()
    frames[start:] = 0
    for i in range(start, t):
        if centers[i] is not None:
            mask = shape_mask(obj.shape, *centers[i], obj.size, h, w)
            frames[i][mask] = COLORS[color or obj.color]
    frames[:, clip.occluder.mask(h, w)] = OCCLUDER_RGB
    return frames


def errors_of(frames, prompt) -> dict[str, list[int]]:
    return {k: v for k, v in critique(frames, prompt).errors.items() if v}


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------


def test_collisions_are_elastic_and_never_overlap():
    hits = 0
    for seed in range(40):
        clip = render_clip(25, 48, 80, seed=seed, two_objects=True, collide=True)
        a, b = masks(clip)
        assert not (a & b).any(), seed  # boxes touch at most: no pixel in both
        ca, cb = (o.centers for o in clip.objects)
        assert (np.abs(ca - cb).max(1) >= clip.objects[0].size - 1e-9).all()
        hits += bool(clip.contacts)
        # Before the first contact (never before frame F) both follow their own straight paths.
        assert all(tau >= free_steps(25) for tau in clip.contacts)
        for obj in clip.objects:  # the caption's direction holds from frame 0 through frame F
            axis = 0 if obj.direction in ("left", "right") else 1
            sign = 1 if obj.direction in ("right", "down") else -1
            assert (sign * np.diff(obj.centers[:free_steps(25) + 1, axis]) > 0).all()
    assert hits >= 15  # about half the clips collide


def test_simulate_head_on_swaps_velocities():
    # Two 10 px boxes on one row, 4 px/frame and 2 px/frame towards each other: contact when the
    # 20 px gap between their edges closes, at t = 20 / 6; afterwards they swap velocities.
    (a, b), contacts = simulate([(15.0, 20.0), (45.0, 20.0)], [(4.0, 0.0), (-2.0, 0.0)], 6,
                                40, 100, 10)
    assert contacts == [pytest.approx(20 / 6)]
    tau = 20 / 6
    xa, xb = 15 + 4 * tau, 45 - 2 * tau  # 10 px apart at contact
    assert a[5, 0] == pytest.approx(xa - 2 * (5 - tau))
    assert b[5, 0] == pytest.approx(xb + 4 * (5 - tau))
    assert (a[:, 1] == 20).all() and (b[:, 1] == 20).all()
    # Perpendicular: the component along the contact axis moves over, the mover stops.
    (a, b), contacts = simulate([(10.0, 20.0), (30.0, 20.0)], [(5.0, 0.0), (0.0, 0.0)], 4,
                                40, 100, 10)
    assert contacts == [2.0] and a[3, 0] == 20.0 and b[3, 0] == 35.0


def test_occluder_is_gray_in_front_and_starts_clear():
    for seed in range(30):
        clip = render_clip(17, 64, 64, seed=seed, occluder=True, two_objects=seed % 2 == 1)
        bar = clip.occluder
        assert clip.caption.endswith(OCCLUDER_SUFFIX) and bar.thickness == 24
        assert bar.horizontal == (clip.objects[0].direction in ("up", "down"))
        m = bar.mask(64, 64)
        assert (clip.frames[:, m] == OCCLUDER_RGB).all()  # drawn on top of everything
        axis = 0 if bar.horizontal else 1  # rows or columns the bar spans
        for obj_mask in masks(clip):
            used = np.flatnonzero(obj_mask[:2].any((0, 2 - axis)))  # object rows/columns
            gap = max(bar.start - used.max(), used.min() - (bar.start + bar.thickness - 1)) - 1
            assert gap >= 2, seed  # 2 px of background in frames 0 and 1


def test_new_options_are_seeded_and_validated():
    a = render_clip(17, 48, 80, seed=5, two_objects=True, collide=True, occluder=True)
    b = render_clip(17, 48, 80, seed=5, two_objects=True, collide=True, occluder=True)
    assert np.array_equal(a.frames, b.frames) and a.caption == b.caption
    with pytest.raises(ValueError, match="collide needs two_objects"):
        render_clip(9, 32, 32, collide=True)
    with pytest.raises(ValueError, match="at least 8 px"):
        render_clip(9, 6, 32, occluder=True)
    world = ShapesWorld(sizes=[(9, 32, 32)], seed=1, two_objects=True, collide=True,
                        occluder=True)
    captions = [world.sample(i)[1] for i in range(20)]
    assert any(c.endswith(OCCLUDER_SUFFIX) for c in captions)
    assert any(not c.endswith(OCCLUDER_SUFFIX) for c in captions)
    # Off, the stream is the old one (the options draw only after everything else).
    plain, rich = ShapesWorld(seed=1, two_objects=True), ShapesWorld(seed=1, two_objects=True,
                                                                     collide=False)
    assert all(np.array_equal(plain.sample(i)[0], rich.sample(i)[0]) for i in range(5))


# --------------------------------------------------------------------------------------------
# The critic on ground truth
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
def test_ground_truth_passes(mode, size):
    contacts = hidden = 0
    for seed in range(12):
        clip = render_clip(*size, seed=seed, **MODES[mode])
        verdict = critique(clip.frames, clip.caption)
        assert verdict.passed, (seed, verdict.summary())
        for obj, truth in zip(verdict.objects, clip.objects):
            assert (obj.color.observed, obj.shape.observed, obj.direction.observed) == \
                (truth.color, truth.shape, truth.direction), (seed, verdict.summary())
        contacts += bool(clip.contacts)
        hidden += any(a is None for o in verdict.objects for a in o.areas)
    if mode == "collide":
        assert contacts >= 4  # bounces off each other are not bad bounces or teleports
    if mode == "occluder":
        assert hidden >= 4  # objects went fully behind the bar and were not "vanishing"


def test_error_kinds_follow_the_prompt():
    clip = render_clip(17, 64, 64, seed=0, occluder=True)
    assert tuple(critique(clip.frames, clip.caption).errors) == OCCLUDER_KINDS
    assert OCCLUDER_KINDS == ERROR_KINDS + ("permanence",)
    plain = render_clip(17, 64, 64, seed=0)
    assert tuple(critique(plain.frames, plain.caption).errors) == ERROR_KINDS
    assert has_occluder("A red circle moving left and a blue square moving up behind a grey bar.")
    assert [t.color for t in parse_prompt(clip.caption)] == [clip.objects[0].color]
    with pytest.raises(ValueError, match="cannot parse"):
        parse_prompt("the digit 3 moving up behind a gray bar")


# --------------------------------------------------------------------------------------------
# Permanence
# --------------------------------------------------------------------------------------------


def occluded_clip():
    """A one-object clip whose object goes fully behind the bar and comes out whole: the clip,
    the first hidden frame and the first frame fully out again."""
    for seed in range(200):
        clip = render_clip(25, 64, 64, seed=seed, occluder=True)
        (obj,) = masks(clip)
        bar = clip.occluder.mask(64, 64)
        shown = (obj & ~bar).sum((1, 2))
        gone = [t for t in range(25) if shown[t] == 0]
        if gone and gone[0] >= 4:
            out = [t for t in range(gone[-1], 25) if shown[t] == obj[t].sum()
                   and not (np.roll(obj[t], 3, 0 if clip.occluder.horizontal else 1) & bar).any()
                   and not (np.roll(obj[t], -3, 0 if clip.occluder.horizontal else 1) & bar).any()]
            if out and out[0] <= 20:
                return clip, gone[0], out[0]
    raise AssertionError("no clip passes behind the bar")


def test_ground_truth_of_the_occluded_clip_passes():
    clip, _, _ = occluded_clip()
    assert critique(clip.frames, clip.caption).passed


def test_never_coming_out_is_permanence_not_vanishing():
    clip, hidden, out = occluded_clip()
    centers = [c if t < hidden else None for t, c in enumerate(clip.objects[0].centers)]
    errors = errors_of(redraw(clip, centers, hidden), clip.caption)
    # Flagged (not as vanishing) from within 3 frames of when it should be out, to the end.
    assert set(errors) == {"permanence"} and min(errors["permanence"]) <= out + 3
    assert errors["permanence"][-1] == 24


def test_coming_out_in_the_wrong_place_is_permanence():
    clip, hidden, out = occluded_clip()
    c = clip.objects[0].centers.copy()
    across = 1 if clip.occluder.horizontal is False else 0  # the axis along the bar
    c[hidden:, across] += 16 if c[0, across] < 32 else -16  # a quarter of the frame sideways
    errors = errors_of(redraw(clip, list(c), hidden), clip.caption)
    assert "permanence" in errors and min(errors["permanence"]) <= out


def test_coming_out_late_is_permanence():
    clip, hidden, out = occluded_clip()
    c = list(clip.objects[0].centers)
    late = c[:hidden] + [c[hidden]] * 6 + c[hidden:-6]  # waits 6 frames behind the bar
    errors = errors_of(redraw(clip, late, hidden), clip.caption)
    assert "permanence" in errors and min(errors["permanence"]) <= out + 6


def test_coming_out_in_another_colour_is_caught():
    clip, hidden, out = occluded_clip()
    other = next(c for c in COLORS if c != clip.objects[0].color)
    frames = redraw(clip, list(clip.objects[0].centers), hidden, color=other)
    errors = errors_of(frames, clip.caption)
    assert "permanence" in errors and min(errors["permanence"]) <= out + 3
    assert "color_change" in errors or "extra_object" in errors


# --------------------------------------------------------------------------------------------
# Collisions
# --------------------------------------------------------------------------------------------


def collision_clip():
    """A 25-frame collide clip with one contact in frames 8..18, and that contact's time."""
    for seed in range(100):
        clip = render_clip(25, 64, 64, seed=seed, two_objects=True, collide=True)
        if len(clip.contacts) == 1 and 8 <= clip.contacts[0] <= 18:
            return clip, clip.contacts[0]
    raise AssertionError("no colliding clip")


def test_clone_after_a_collision_is_a_duplicate():
    clip, tau = collision_clip()
    assert critique(clip.frames, clip.caption).passed
    obj, after = clip.objects[0], int(np.ceil(tau))
    both = np.logical_or.reduce(masks(clip))
    frames = clip.frames.copy()
    # From the collision on, a third object of the first one's colour, mirrored through the
    # frame centre (drawn where it stays clear of both objects).
    for t in range(after, 25):
        clone = shape_mask(obj.shape, *(64 - obj.centers[t]), obj.size, 64, 64)
        grown = np.logical_or.reduce([np.roll(clone, s, a) for s in (-2, 0, 2) for a in (0, 1)])
        if not (grown & both[t]).any():
            frames[t][clone] = COLORS[obj.color]
    errors = errors_of(frames, clip.caption)
    assert "duplicate" in errors and min(errors["duplicate"]) >= after
