"""Variable-size sampling: sizes fit the token budget, keep aspect, and maximise duration."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zoetrope.data.sampling import aspect_sizes, fit_to_budget


def tokens(frames: int, height: int, width: int) -> int:
    """A 4x8x8 causal VAE with 1x2x2 patches: (1 + (T - 1) / 4) * (H / 16) * (W / 16)."""
    return (1 + (frames - 1) // 4) * (height // 16) * (width // 16)


def test_examples():
    assert fit_to_budget(300, 718, 718, 10**9, tokens) == (297, 704, 704)  # everything fits
    assert fit_to_budget(300, 718, 718, 4096, tokens) == (297, 112, 112)  # 75 * 49 = 3675 tokens
    assert fit_to_budget(33, 480, 854, 4096, tokens) == (33, 256, 448)  # 9 * 16 * 28 = 4032
    assert fit_to_budget(1, 480, 854, 4096, tokens) == (1, 480, 848)  # an image: full size
    assert fit_to_budget(5, 10, 30, 256, tokens) == (5, 16, 16)  # tiny clips round up to 16


def test_portrait_keeps_orientation_and_min_side():
    frames, h, w = fit_to_budget(64, 854, 480, 2000, tokens, min_side=128)
    assert h > w and w >= 128 and tokens(frames, h, w) <= 2000
    assert aspect_sizes(854, 480, 16)[0] == (848, 480)


def test_too_small_budget_raises():
    with pytest.raises(ValueError, match="too small: one 64x64 frame needs 16 tokens"):
        fit_to_budget(17, 256, 256, 15, tokens)


@settings(max_examples=150, deadline=None, database=None)
@given(native_frames=st.integers(1, 200), native_h=st.integers(8, 800),
       native_w=st.integers(8, 800), budget=st.integers(16, 20000))
def test_properties(native_frames, native_h, native_w, budget):
    sizes = aspect_sizes(native_h, native_w, 16, 64)
    if tokens(1, *sizes[-1]) > budget:
        with pytest.raises(ValueError):
            fit_to_budget(native_frames, native_h, native_w, budget, tokens)
        return
    frames, h, w = fit_to_budget(native_frames, native_h, native_w, budget, tokens)
    # Constraints: 1 + 4k frames, multiples of 16, within native size, within budget.
    assert (frames - 1) % 4 == 0 and 1 <= frames <= native_frames
    assert h % 16 == 0 and w % 16 == 0 and (h, w) in sizes
    assert h <= max(16, native_h) and w <= max(16, native_w)
    assert tokens(frames, h, w) <= budget
    # Aspect: the longer side is the nearest multiple of 16 (unless capped by the native size).
    short, long = sorted((native_h, native_w))
    got_short, got_long = (h, w) if native_h <= native_w else (w, h)
    capped = max(16, long // 16 * 16)
    assert abs(got_long - got_short * long / short) <= 8 + 1e-9 or got_long == capped
    # Maximal: four more frames do not fit at the smallest size, and the next size up does not
    # fit at this duration.
    if frames + 4 <= native_frames:
        assert tokens(frames + 4, *sizes[-1]) > budget
    bigger = sizes[: sizes.index((h, w))]
    if bigger:
        assert tokens(frames, *bigger[-1]) > budget
