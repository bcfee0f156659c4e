"""Variable-size sampling: pick the (frames, height, width) a clip is trained at.

Sora-style training keeps each clip's native aspect ratio and packs differently sized samples
into one token sequence (NaViT, arXiv 2307.06304), so each clip needs a size whose token count
fits a budget. Token arithmetic belongs to the model (VAE factors x patch size), so it comes in
as a function `tokens_for(frames, height, width) -> int`; this module only searches sizes.

Constraints: frames = 1 + frame_multiple * k (a causal VAE with temporal factor 4 takes 1 + 4k;
one frame is an image), height and width are multiples of `spatial_multiple`, nothing exceeds the
native size (except clips smaller than one spatial multiple, which are rounded up to it).
Priority: as many frames as fit with the shorter side at least `min_side`, then the largest
spatial size that still fits with that many frames.
"""

from __future__ import annotations

from typing import Callable

from ..errors import UserError


def _floor_to(value: float, multiple: int) -> int:
    return max(multiple, int(value // multiple) * multiple)


def aspect_sizes(native_h: int, native_w: int, multiple: int,
                 min_side: int = 0) -> list[tuple[int, int]]:
    """(h, w) sizes, largest first, with sides multiples of `multiple` and the native aspect.

    The shorter side steps down by one multiple at a time (from the native size, floored, to
    `min_side`); the longer side is the nearest multiple to the native aspect ratio.
    """
    if native_h < 1 or native_w < 1 or multiple < 1:
        raise UserError(f"sizes and multiple must be positive, got {native_h}x{native_w}, "
                         f"{multiple}")
    short, long = sorted((native_h, native_w))
    top_short, top_long = _floor_to(short, multiple), _floor_to(long, multiple)
    bottom = min(top_short, _floor_to(max(min_side, multiple), multiple))
    sizes = []
    for side in range(top_short, bottom - 1, -multiple):
        other = min(top_long, max(multiple, round(side * long / short / multiple) * multiple))
        sizes.append((side, other) if native_h <= native_w else (other, side))
    return sizes


def fit_to_budget(
    native_frames: int,
    native_h: int,
    native_w: int,
    max_tokens: int,
    tokens_for: Callable[[int, int, int], int],
    frame_multiple: int = 4,
    spatial_multiple: int = 16,
    min_side: int | None = None,
) -> tuple[int, int, int]:
    """Largest-duration (frames, h, w) keeping native aspect with tokens_for(...) <= max_tokens.

    `min_side` (default 4 * spatial_multiple) is the smallest shorter side traded for duration;
    a budget that cannot hold even one frame at that size raises ValueError.
    """
    if native_frames < 1:
        raise UserError(f"native_frames must be >= 1, got {native_frames}")
    if frame_multiple < 1:
        raise UserError(f"frame_multiple must be >= 1, got {frame_multiple}")
    min_side = 4 * spatial_multiple if min_side is None else min_side
    sizes = aspect_sizes(native_h, native_w, spatial_multiple, min_side)
    longest = (native_frames - 1) // frame_multiple
    for k in range(longest, -1, -1):
        frames = 1 + frame_multiple * k
        # Sizes are sorted largest first, so the first that fits is the best for this duration.
        for h, w in sizes:
            if tokens_for(frames, h, w) <= max_tokens:
                return frames, h, w
    h, w = sizes[-1]
    raise UserError(f"token budget {max_tokens} is too small: one {h}x{w} frame needs "
                     f"{tokens_for(1, h, w)} tokens")
