"""Conditioning masks for DiT training: which latent frames of a sample are given.

A given latent frame is fed clean at t = 0 and left out of the loss (the diffusion losses' `keep`),
as the pipeline feeds an image to animate, a clip to extend or the two ends to connect. Every draw
comes from the sample's own generator, after its time, noise and prompt dropout, so a sample's
mask is the same for any process count and a resumed run draws exactly what it would have.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import GIVEN_KINDS


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """One integer in [low, high] inclusive from `generator`."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def given_frames(kind: str, t: int, generator: torch.Generator) -> Tensor:
    """(t,) bool: the latent frames `kind` gives of a t-frame latent, lengths drawn uniformly.

    first: frame 0; last: frame t - 1; prefix: frames 0..k-1 with k in 1..t-1; suffix: the last
    k; ends: a prefix and a suffix leaving at least one frame between them. At least one frame is
    always left to generate: a latent too short for `kind` (t = 1, or t = 2 for ends) gets none.
    """
    if kind not in GIVEN_KINDS:
        raise ValueError(f"unknown kind of given frames {kind!r}; known: {', '.join(GIVEN_KINDS)}")
    mask = torch.zeros(t, dtype=torch.bool)
    if t < (3 if kind == "ends" else 2):
        return mask
    if kind == "first":
        mask[0] = True
    elif kind == "last":
        mask[-1] = True
    elif kind == "prefix":
        mask[:_randint(1, t - 1, generator)] = True
    elif kind == "suffix":
        mask[t - _randint(1, t - 1, generator):] = True
    else:
        head = _randint(1, t - 2, generator)
        tail = _randint(1, t - 1 - head, generator)
        mask[:head] = True
        mask[t - tail:] = True
    return mask


def draw_given_frames(generator: torch.Generator, t: int, share: float,
                      kinds: list[str]) -> Tensor:
    """(t,) bool: with probability `share` the frames of a kind drawn uniformly from `kinds`."""
    if share <= 0:
        return torch.zeros(t, dtype=torch.bool)  # draws nothing: old recipes stay bit-exact
    given = torch.rand(1, generator=generator).item() < share
    kind = kinds[_randint(0, len(kinds) - 1, generator)]
    return given_frames(kind, t, generator) if given else torch.zeros(t, dtype=torch.bool)
