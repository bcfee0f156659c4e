"""Physics scores: exact centres fit exactly; rendered ground truth scores near zero at every size,
shape and direction; speed changes, mid-air reversals, teleports and missed bounces stand out."""

import itertools
import json

import numpy as np
import pytest

from zoetrope.critic import critique
from zoetrope.data.shapes import (COLORS, DIRECTIONS, OCCLUDER_RGB, SHAPES, bouncing_centers,
                                  render_clip, shape_mask, simulate)
from zoetrope.physics import (centroid_offset, physics_from_critique, physics_scores,
                              score_track, world_size)

GROUND_TRUTH = [((17, 64, 64), 2), ((17, 48, 80), 2), ((33, 64, 64), 2), ((129, 64, 64), 1),
                ((257, 64, 64), 1)]  # (size, seeds per shape x direction)


def fold(u: np.ndarray, room: float) -> np.ndarray:
    """Elastic bounces between 0 and room of the unfolded path u (as `bouncing_centers` does)."""
    r = np.mod(u, 2 * room)
    return np.where(r <= room, r, 2 * room - r)


def unfolded(clip) -> tuple[int, float, np.ndarray]:
    """(axis index, room, unfolded box-centre path minus size / 2) of a clip's first object;
    frames 0 and 1 never straddle a bounce, so the first step is the velocity."""
    obj, (_, h, w, _) = clip.objects[0], clip.frames.shape
    k = 0 if obj.direction in ("left", "right") else 1
    q = obj.centers[:, k] - obj.size / 2
    return k, (w, h)[k] - obj.size, q[0] + (q[1] - q[0]) * np.arange(len(q))


def repaint(clip, along: np.ndarray) -> np.ndarray:
    """The clip's object redrawn with its box centre at `along` + size / 2 on its axis."""
    obj, (n, h, w, _) = clip.objects[0], clip.frames.shape
    k = unfolded(clip)[0]
    out = np.zeros_like(clip.frames)
    for t in range(n):
        center = obj.centers[t].copy()
        center[k] = along[t] + obj.size / 2
        out[t][shape_mask(obj.shape, *center, obj.size, h, w)] = COLORS[obj.color]
    return out


def corrupt(clip, kind: str) -> np.ndarray:
    """Frames breaking the law in one way (see the cases of test_corruptions_stand_out)."""
    k, room, u = unfolded(clip)
    t, half, v = np.arange(len(u)), len(u) // 2, u[1] - u[0]
    if kind == "speed":  # twice as fast from halfway, continuing from where it was
        return repaint(clip, fold(np.where(t <= half, u, u[half] + 2 * v * (t - half)), room))
    if kind == "mid_air":  # turns back where it is at least 10 px from both walls
        turn = next(i for i in range(3, half + 1) if 10 <= u[i] <= room - 10)
        return repaint(clip, fold(np.where(t <= turn, u, 2 * u[turn] - u), room))
    if kind == "teleport_along":  # 10 px further along its path from halfway
        return repaint(clip, fold(np.where(t >= half, u + 10, u), room))
    if kind == "teleport_across":  # 10 px across its axis (towards the middle) from halfway
        obj, (_, h, w, _) = clip.objects[0], clip.frames.shape
        across = obj.centers[0, 1 - k]
        shift = 10 if across < (h, w)[k] / 2 else -10
        frames = clip.frames.copy()
        frames[half:] = np.roll(frames[half:], shift, axis=2 - k)  # y: axis 1 of (T, H, W, 3)
        return frames
    if kind == "stuck":  # stops at the wall instead of bouncing
        return repaint(clip, np.clip(u, 0, room))
    assert kind == "through"  # carries on through the wall and out of the frame
    return repaint(clip, u)


def test_centroid_offset_matches_rasterised_triangles():
    for size in (12, 16, 24, 32):  # frames of 48 to 128 px
        offsets = []
        # Averaged over sub-pixel positions (rows matter most: 64 of them), rasterisation cancels.
        for dx, dy in itertools.product(np.linspace(0, 1, 4, endpoint=False),
                                        np.linspace(0, 1, 64, endpoint=False)):
            ys, _ = np.nonzero(shape_mask("triangle", 24 + dx, 24 + dy, size, 48, 48))
            offsets.append(ys.mean() + 0.5 - (24 + dy))
        assert abs(np.mean(offsets) - centroid_offset("triangle", size)) < 0.02
    assert centroid_offset("circle", 16) == centroid_offset("square", 16) == 0
    with pytest.raises(ValueError, match="unknown shape"):
        centroid_offset("star", 16)


@pytest.mark.parametrize("seed", range(6))
def test_exact_centres_fit_exactly(seed):
    rng = np.random.default_rng(seed)
    n, h, w = (40, 64, 64) if seed % 2 else (97, 48, 80)
    size, shape = world_size(h, w), SHAPES[seed % 3]
    direction = DIRECTIONS[seed % 4]
    truth = bouncing_centers(rng, n, h, w, size, direction)
    centroids = truth + [0, centroid_offset(shape, size)]
    score = score_track([tuple(c) for c in centroids], (n, h, w), shape)
    assert score.axis == ("x" if direction in ("left", "right") else "y")
    assert score.max_error < 1e-6
    np.testing.assert_allclose(score.ideal, centroids, atol=1e-3)  # rounded to 1/1000 px
    step = truth[1] - truth[0]
    assert score.velocity == pytest.approx(step[0] + step[1], abs=1e-6)
    assert abs(score.speed_drift) < 1e-6
    # Bounces exactly where the true path reverses, each seen on time.
    k = 0 if score.axis == "x" else 1
    turns = [t for t in range(1, n - 1) if (truth[t, k] - truth[t - 1, k])
             * (truth[t + 1, k] - truth[t, k]) < 0]
    assert len(score.bounces) >= len(turns) - 1 and len(score.bounces) >= 1
    for b in score.bounces:
        assert abs(b.delay) < 1e-6 and min(abs(b.frame - t) for t in turns) <= 1
    assert score.missed_bounces == score.mid_air_reversals == score.extra_bounces == 0


def test_noise_and_unseen_frames():
    n, h, w = 65, 64, 64
    truth = bouncing_centers(np.random.default_rng(1), n, h, w, world_size(h, w), "left")
    noisy = truth + np.random.default_rng(2).uniform(-0.5, 0.5, truth.shape)
    centers = [None if t % 5 == 3 else tuple(c) for t, c in enumerate(noisy)]
    score = score_track(centers, (n, h, w), "circle")
    assert score.seen == n - 13 and score.rms_error < 0.4 and score.max_error < 1.0
    assert [e is None for e in score.errors] == [c is None for c in centers]
    np.testing.assert_allclose(score.ideal, truth, atol=0.3)  # unseen frames get ideals too
    assert score.missed_bounces == score.mid_air_reversals == 0 and score.bounces
    unseen = score_track([None] * n, (n, h, w), "circle", "red circle moving left")
    assert unseen.rms_error is None and unseen.seen == 0 and unseen.bounces == []
    with pytest.raises(ValueError, match="one centre"):
        score_track(centers[:-1], (n, h, w), "circle")


@pytest.mark.parametrize("size,seeds", GROUND_TRUTH, ids=lambda v: "x".join(map(str, v))
                         if isinstance(v, tuple) else str(v))
def test_ground_truth_scores_near_zero(size, seeds):
    bounces = 0
    for i, (shape, direction) in enumerate(itertools.product(SHAPES, DIRECTIONS)):
        for seed in range(i * seeds, (i + 1) * seeds):
            clip = render_clip(*size, shape=shape, direction=direction, seed=seed)
            score = physics_scores(clip.frames, clip.caption).objects[0]
            where = f"{size} {clip.caption} seed {seed}"
            # Rasterisation: a crisp centroid is off its true place by up to 0.5 px.
            assert score.rms_error < 0.35 and score.max_error < 1.0, where
            assert score.rms_share < 0.35 / 48
            assert abs(score.speed_drift) < 0.1, where
            assert score.missed_bounces == score.mid_air_reversals == score.extra_bounces == 0
            assert all(abs(b.delay) < 0.25 for b in score.bounces), where
            true_speed = np.abs(clip.objects[0].centers[1] - clip.objects[0].centers[0]).max()
            assert score.speed == pytest.approx(true_speed, abs=0.1), where
            bounces += len(score.bounces)
    assert bounces >= 12  # the clips do bounce: the bounce checks above were exercised


@pytest.mark.parametrize("kind", ["speed", "mid_air", "teleport_along", "teleport_across"])
def test_corruptions_stand_out(kind):
    for size, (shape, direction) in itertools.product(
            [(17, 64, 64), (33, 64, 64)], itertools.product(SHAPES, DIRECTIONS)):
        clip = render_clip(*size, shape=shape, direction=direction, seed=1)
        score = physics_scores(corrupt(clip, kind), clip.caption).objects[0]
        where = f"{kind} {size} {clip.caption}"
        # Ground truth stays under 0.35 px RMS and 1 px at worst.
        assert score.rms_error > 2.0 and score.max_error > 4.0, where
        if kind == "speed":
            assert score.speed_drift > 0.5, where
        if kind == "mid_air":
            assert score.mid_air_reversals == 1, where


@pytest.mark.parametrize("kind", ["stuck", "through"])
def test_missed_bounces_are_reported(kind):
    checked = 0
    for (shape, direction), seed in itertools.product(itertools.product(SHAPES, DIRECTIONS),
                                                      range(2)):
        clip = render_clip(33, 64, 64, shape=shape, direction=direction, seed=seed)
        _, room, u = unfolded(clip)
        if np.all((u >= 2) & (u <= room - 2)):
            continue  # no wall reached within the clip: nothing to miss
        score = physics_scores(corrupt(clip, kind), clip.caption).objects[0]
        assert score.missed_bounces == 1 and score.bounces[0].observed is None, clip.caption
        assert score.rms_error > 1.0, clip.caption
        checked += 1
    assert checked >= 12


def test_critique_tracks_are_reused_and_records_are_json():
    clip = render_clip(17, 64, 64, seed=3, two_objects=True)
    verdict = critique(clip.frames, clip.caption)
    score = physics_from_critique(verdict)
    assert score.to_dict() == physics_scores(clip.frames, clip.caption).to_dict()
    assert [o.target for o in score.objects] == [o.target for o in verdict.objects]
    assert len(score.objects) == 2 and len(score.objects[0].errors) == 17
    json.dumps(score.to_dict())
    digits = critique(np.zeros((3, 32, 32, 3), np.uint8), "the digit 3 moving up")
    with pytest.raises(ValueError, match="shapes world"):
        physics_from_critique(digits)


# ------------------------------------------------------------------------------------------------
# The richer world: collisions between two objects, and the occluder bar
# ------------------------------------------------------------------------------------------------

RICH = {"collide": dict(two_objects=True, collide=True), "occluder": dict(occluder=True),
        "both": dict(two_objects=True, collide=True, occluder=True)}


def draw(clip, centers: list[np.ndarray]) -> np.ndarray:
    """The clip redrawn with its objects' box centres replaced (T, 2) each, the bar on top."""
    (n, h, w, _), out = clip.frames.shape, np.zeros_like(clip.frames)
    for obj, track in zip(clip.objects, centers):
        for t in range(n):
            out[t][shape_mask(obj.shape, *track[t], obj.size, h, w)] = COLORS[obj.color]
    if clip.occluder is not None:
        out[:, clip.occluder.mask(h, w)] = OCCLUDER_RGB
    return out


@pytest.mark.parametrize("world", list(RICH))
@pytest.mark.parametrize("size", [(17, 64, 64), pytest.param((33, 64, 64), marks=pytest.mark.slow)],
                         ids=lambda s: "x".join(map(str, s)))  # 33 frames: ~70 s, in test-slow
def test_ground_truth_scores_near_zero_in_the_richer_world(world, size):
    contacts = found = 0
    for seed in range(30):
        clip = render_clip(*size, seed=seed, **RICH[world])
        score = physics_scores(clip.frames, clip.caption)
        for obj in score.objects:
            where = f"{world} {size} seed {seed} {obj.target}"
            # Rasterisation only; a frame cut by the bar or next to a contact is not counted.
            assert obj.rms_error < 0.4 and obj.max_error < 1.0, where
            assert obj.missed_bounces == obj.mid_air_reversals == obj.extra_bounces == 0, where
            # Within stretches between contacts: short spans, so up to 2 px of rounding.
            assert obj.speed_drift is None or abs(obj.speed_drift) < 0.4, where
            # A contact found is a contact that happened: within 1.5 frames, as a frame between
            # two contacts a step apart may go to either stretch.
            assert all(min(abs(c - t) for t in clip.contacts) < 1.5 for c in obj.contacts), where
        contacts += bool(clip.contacts)
        found += bool(clip.contacts) and bool(score.objects[0].contacts)
    if world == "collide":  # collisions happened, and most were found (the rest change little)
        assert contacts >= 10 and found >= 0.8 * contacts


def test_cut_frames_are_skipped_not_scored():
    checked = 0
    for seed in range(6):
        clip = render_clip(33, 64, 64, seed=seed, occluder=True)
        score = physics_scores(clip.frames, clip.caption).objects[0]
        verdict = critique(clip.frames, clip.caption)
        cut = [t for t in score.covered if verdict.objects[0].centers[t] is not None]
        assert cut and all(score.errors[t] is None for t in score.covered)
        # Scored with the cut frames, the error is clearly larger: their centroids are off.
        raw = score_track(verdict.objects[0].centers, (33, 64, 64), clip.objects[0].shape)
        assert raw.max_error > 2.0 > 1.0 > score.max_error
        # From the critique alone (no bar mask) cut frames are found from areas.
        alone = physics_from_critique(verdict).objects[0]
        assert alone.rms_error < 0.4 and alone.max_error < 1.0
        checked += 1
    assert checked == 6


def _change_point(clip, kind: str):
    """(frame m, redrawn frames) with object 0's velocity doubled or reversed at m, simulated
    onwards with the world's own collisions, or None when no m fits: m more than 5 frames after
    the last contact before it and before the end, no contact within 5 frames after the change,
    no wall event at m -+ 1, and object 0 >= 10 px from every wall at m."""
    n, h, w, _ = clip.frames.shape
    size, tracks = clip.objects[0].size, [o.centers for o in clip.objects]
    for m in range(int(clip.contacts[0]) + 6, n - 6):
        if min(abs(m - c) for c in clip.contacts) <= 5:
            continue
        steps = [np.diff(tr[m - 1:m + 2], axis=0) for tr in tracks]  # (2, 2) each
        if any(not np.allclose(s[0], s[1]) for s in steps) or not np.any(steps[0][1]):
            continue
        x, y = tracks[0][m]
        if min(x, y, w - x, h - y) - size / 2 < 10:
            continue
        v0 = steps[0][1] * (2 if kind == "speed" else -1)
        tail, contacts = simulate([tuple(tr[m]) for tr in tracks], [tuple(v0), tuple(steps[1][1])],
                                  n - m, h, w, size)
        if contacts and min(contacts) <= 5:
            continue
        return m, draw(clip, [np.concatenate([tr[:m], tl]) for tr, tl in zip(tracks, tail)])
    return None


@pytest.mark.parametrize("kind", ["speed", "reversal"])
def test_mid_air_changes_stand_out_after_collisions(kind):
    checked = []
    for seed in range(100):  # clips that collide, then leave room for a change: 1 in 8
        clip = render_clip(33, 64, 64, seed=seed, two_objects=True, collide=True)
        if not clip.contacts or (picked := _change_point(clip, kind)) is None:
            continue
        m, frames = picked
        truth = physics_scores(clip.frames, clip.caption).objects[0]
        score = physics_scores(frames, clip.caption).objects[0]
        where = f"{kind} seed {seed} at {m}"
        assert truth.rms_error < 0.4 and truth.contacts, where
        assert score.rms_error > 1.0 and score.max_error > 3.0, where
        if kind == "reversal":
            assert score.mid_air_reversals >= 1, where
        checked.append((seed, round(score.rms_error, 2), round(score.max_error, 2)))
        if len(checked) == 6:
            break
    assert len(checked) == 6, checked


def test_teleport_behind_the_bar_stands_out():
    checked = 0
    for seed in range(12):
        clip = render_clip(33, 64, 64, seed=seed, occluder=True)
        centers = critique(clip.frames, clip.caption).objects[0].centers
        back = next((t for t in range(1, 30) if centers[t] is not None and centers[t - 1] is None),
                    None)
        if back is None:
            continue  # never went behind the bar and came out
        k = 0 if clip.objects[0].direction in ("left", "right") else 1
        moved = clip.objects[0].centers.copy()
        moved[back:, 1 - k] += 10 if moved[0, 1 - k] < 32 else -10  # across, towards the middle
        truth = physics_scores(clip.frames, clip.caption).objects[0]
        score = physics_scores(draw(clip, [moved]), clip.caption).objects[0]
        assert truth.rms_error < 0.4, seed
        assert score.rms_error > 2.0 and score.max_error > 4.0, seed
        assert score.max_error > 8.0, seed  # the side with fewer frames is 10 px off
        checked += 1
    assert checked >= 6
