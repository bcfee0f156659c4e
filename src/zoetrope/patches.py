"""Spacetime patches and NaViT packing (Dehghani et al., "Patch n' Pack", arXiv 2307.06304).

A latent (C, t, h, w) is cut into non-overlapping patches of size (pt, ph, pw); each patch is a
token of C * pt * ph * pw numbers, flattened in the order (c, pt, ph, pw). Latents of different
sizes are packed into one sequence: `Packed` is the one structure that knows where samples begin
and end. Every token carries its sample id and its (t, h, w) position in patch units, so the model
needs no fixed size: positions are data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch
from einops import rearrange
from torch import Tensor

from .errors import UserError

PatchSize = tuple[int, int, int]
T = TypeVar("T")


@dataclass
class Packed:
    """Tokens of several samples in one sequence, with everything needed to split them again."""

    tokens: Tensor  # (N, C * pt * ph * pw)
    sample_ids: Tensor  # (N,) long: which sample each token belongs to
    positions: Tensor  # (N, 3) long: (t, h, w) position of each token, in patches
    shapes: list[tuple[int, int, int, int]]  # per-sample latent shape (C, t, h, w)
    patch_size: PatchSize

    @property
    def num_samples(self) -> int:
        return len(self.shapes)

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[0]

    @property
    def lengths(self) -> list[int]:
        """Tokens per sample."""
        return [_num_patches(shape, self.patch_size) for shape in self.shapes]

    def with_tokens(self, tokens: Tensor) -> Packed:
        """The same layout carrying other tokens (e.g. noised latents or a model output)."""
        if tokens.shape[0] != self.num_tokens:
            raise UserError(f"expected {self.num_tokens} tokens, got {tokens.shape[0]}")
        return replace(self, tokens=tokens)

    def to(self, device: torch.device | str) -> Packed:
        return replace(self, tokens=self.tokens.to(device), sample_ids=self.sample_ids.to(device),
                       positions=self.positions.to(device))


def _num_patches(shape: tuple[int, int, int, int], patch_size: PatchSize) -> int:
    _, t, h, w = shape
    pt, ph, pw = patch_size
    return (t // pt) * (h // ph) * (w // pw)


def _check_divisible(shape: Sequence[int], patch_size: PatchSize) -> None:
    if len(shape) != 4:
        raise UserError(f"latent must be (C, t, h, w), got shape {tuple(shape)}")
    for name, size, p in zip("thw", shape[1:], patch_size):
        if size % p:
            raise UserError(f"latent {name}={size} is not divisible by patch size {p} "
                            f"(latent shape {tuple(shape)}, patch_size {tuple(patch_size)})")


def patchify(latent: Tensor, patch_size: PatchSize) -> Tensor:
    """(C, t, h, w) -> (n, C * pt * ph * pw) tokens in (t, h, w) raster order."""
    _check_divisible(latent.shape, patch_size)
    pt, ph, pw = patch_size
    return rearrange(latent, "c (t pt) (h ph) (w pw) -> (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)


def unpatchify(tokens: Tensor, grid: tuple[int, int, int], patch_size: PatchSize) -> Tensor:
    """(n, C * pt * ph * pw) tokens of a (t, h, w) patch grid -> (C, t*pt, h*ph, w*pw)."""
    pt, ph, pw = patch_size
    t, h, w = grid
    return rearrange(tokens, "(t h w) (c pt ph pw) -> c (t pt) (h ph) (w pw)",
                     t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)


def grid_positions(grid: tuple[int, int, int], device: torch.device | str | None = None) -> Tensor:
    """(t, h, w) grid -> (t*h*w, 3) long positions in raster order."""
    axes = [torch.arange(n, device=device) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def pack(latents: Sequence[Tensor], patch_size: PatchSize) -> Packed:
    """Patchify latents of any (C, t, h, w) (same C) and concatenate them into one sequence."""
    if not latents:
        raise UserError("pack needs at least one latent")
    channels = {x.shape[0] for x in latents}
    if len(channels) != 1:
        raise UserError(f"all latents must have the same channel count, got {sorted(channels)}")
    patch_size = tuple(patch_size)  # type: ignore[assignment]
    tokens, ids, positions = [], [], []
    for i, latent in enumerate(latents):
        tok = patchify(latent, patch_size)
        grid = tuple(s // p for s, p in zip(latent.shape[1:], patch_size))
        tokens.append(tok)
        ids.append(torch.full((tok.shape[0],), i, dtype=torch.long, device=latent.device))
        positions.append(grid_positions(grid, latent.device))
    shapes = [tuple(x.shape) for x in latents]
    return Packed(torch.cat(tokens), torch.cat(ids), torch.cat(positions), shapes, patch_size)


def unpack(tokens: Tensor | Packed, packed: Packed) -> list[Tensor]:
    """Split packed tokens back into per-sample latents (C_out, t, h, w).

    C_out is read from the token width, so a model output with other channels (e.g. learned
    sigma's 2C) unpacks with the same layout.
    """
    if isinstance(tokens, Packed):
        tokens = tokens.tokens
    volume = math.prod(packed.patch_size)
    if tokens.shape[-1] % volume:
        raise UserError(f"token width {tokens.shape[-1]} is not a multiple of patch volume {volume}")
    out = []
    for chunk, shape in zip(tokens.split(packed.lengths), packed.shapes):
        grid = tuple(s // p for s, p in zip(shape[1:], packed.patch_size))
        out.append(unpatchify(chunk, grid, packed.patch_size))
    return out


def concat(packs: Sequence[Packed]) -> Packed:
    """Concatenate packed batches into one (sample ids are offset)."""
    offset, ids = 0, []
    for p in packs:
        ids.append(p.sample_ids + offset)
        offset += p.num_samples
    shapes = [s for p in packs for s in p.shapes]
    return Packed(torch.cat([p.tokens for p in packs]), torch.cat(ids),
                  torch.cat([p.positions for p in packs]), shapes, packs[0].patch_size)


def per_token(values: Tensor, packed: Packed) -> Tensor:
    """Broadcast a per-sample tensor (B, ...) to a per-token one (N, ...)."""
    return values.index_select(0, packed.sample_ids)


def budget_batches(items: Iterable[T], max_tokens: int, num_tokens: Callable[[T], int],
                   max_samples: int | None = None) -> Iterator[list[T]]:
    """Greedily group a stream of samples into batches of at most `max_tokens` tokens.

    Samples are kept in stream order; a batch is emitted when the next sample would overflow it.
    A single sample larger than the budget is an error (its size must be reduced upstream).
    """
    batch: list[T] = []
    used = 0
    for item in items:
        n = num_tokens(item)
        if n > max_tokens:
            raise UserError(f"a sample has {n} tokens, more than the budget of {max_tokens}")
        full = max_samples is not None and len(batch) >= max_samples
        if batch and (used + n > max_tokens or full):
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += n
    if batch:
        yield batch
