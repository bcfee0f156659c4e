"""Attention over packed sequences, and the position encodings the DiT uses.

`attention` is the single attention function of the model. Queries and keys carry sample ids;
a query attends only to keys of its own sample (block-diagonal mask), so a packed batch gives the
same result as each sample run alone. Backends: PyTorch SDPA with a boolean mask (reference, any
device) and flex attention with a block mask (CUDA; skips the masked blocks instead of computing
them). Both take (N, heads, head_dim) tensors without a batch axis. `packed_attention` runs each
group of equal-length samples as a dense batch; short low-precision sequences on CPU skip SDPA for
two matmuls (`_dense_attention`): 4x faster at 80 keys on 2 cores, about even at 256.

Positions are data: 3D RoPE (Su et al., RoFormer, arXiv 2104.09864) rotates query/key channel
pairs by angles computed from each token's (t, h, w) position, so any grid size works. The head
dimension is split into three groups, one per axis. `sincos_2d` is the fixed additive embedding of
the original DiT (Peebles and Xie), used by its class-conditional image presets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UserError


def attention(q: Tensor, k: Tensor, v: Tensor, q_ids: Tensor, kv_ids: Tensor,
              backend: str = "auto") -> Tensor:
    """Block-diagonal attention: (N, heads, Dh) queries over (M, heads, Dh) keys/values.

    q_ids (N,) and kv_ids (M,) are sample ids; a query sees only keys with the same id.
    backend: "sdpa", "flex", or "auto" (flex on CUDA when available, else SDPA).
    """
    if backend == "auto":
        backend = "flex" if q.is_cuda and _flex_available() else "sdpa"
    if backend == "flex":
        return _flex(q, k, v, q_ids, kv_ids)
    mask = q_ids[:, None] == kv_ids[None, :]  # (N, M)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
        attn_mask=mask[None, None])  # (1, heads, N, Dh)
    return out[0].transpose(0, 1)  # (N, heads, Dh)


@dataclass
class Layout:
    """How a packed sequence splits into samples, so attention can skip the masked blocks.

    Samples of equal length form a group and attend as one dense batch: the cost is the sum of
    n_i^2 over samples instead of N^2 for the whole packed sequence. Tokens of a sample are
    contiguous, samples in order (as `pack` lays them out). When each group's samples are
    adjacent (e.g. the batch was sorted by size), groups are cut with `split` and joined with
    `cat`; otherwise they are gathered by index and scattered back, which costs more (on CPU about
    6% of a bf16 training step of the bundled model's mixed batch).
    """

    # (token index, sample ids (k,), n); the index is None when every group is adjacent
    groups: list[tuple[Tensor | None, Tensor, int]]
    num_tokens: int

    @property
    def adjacent(self) -> bool:
        """Each group's samples sit side by side, groups in packing order: split, no gather."""
        return all(index is None for index, _, _ in self.groups)


def make_layout(lengths: list[int], device: torch.device | str | None = None) -> Layout:
    """Group samples by token count; adjacent groups (in packing order) need no gather."""
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_len.setdefault(n, []).append(i)
    adjacent = all(samples[-1] - samples[0] == len(samples) - 1 for samples in by_len.values())
    groups = []
    for n, samples in by_len.items():
        ids = torch.tensor(samples, device=device)
        if adjacent:
            groups.append((None, ids, n))
        else:
            index = torch.cat([torch.arange(offsets[i], offsets[i] + n, device=device) for i in samples])
            groups.append((index, ids, n))
    return Layout(groups, offsets[-1])


def packed_attention(q: Tensor, k: Tensor, v: Tensor, layout: Layout,
                     kv_mask: Tensor | None = None) -> Tensor:
    """Attention per sample via `layout`: q (N, heads, Dh) over packed k, v (N, heads, Dh)
    (self-attention) or over padded per-sample k, v (B, L, heads, Dh) with kv_mask (B, L)
    (cross-attention, True = real token)."""
    cross = kv_mask is not None
    if layout.adjacent:  # views in, one cat out
        tokens = [n * len(ids) for _, ids, n in layout.groups]
        if cross:
            counts = [len(ids) for _, ids, _ in layout.groups]
            kvs = zip(k.split(counts), v.split(counts), kv_mask.split(counts))
        else:
            kvs = zip(k.split(tokens), v.split(tokens), [None] * len(tokens))
        outs = [_group_attention(qg, kg, vg, mask, n)
                for qg, (kg, vg, mask), (_, _, n) in zip(q.split(tokens), kvs, layout.groups)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)
    out = q.new_empty(q.shape)
    for index, samples, n in layout.groups:
        if cross:
            kg, vg, mask = k[samples], v[samples], kv_mask[samples]
        else:
            kg, vg, mask = k[index], v[index], None
        out[index] = _group_attention(q[index], kg, vg, mask, n)
    return out


def _group_attention(q: Tensor, k: Tensor, v: Tensor, kv_mask: Tensor | None, n: int) -> Tensor:
    """One group of equal-length samples: q (k*n, heads, Dh) over their own k, v (packed like q,
    or (k, L, heads, Dh) padded text with kv_mask (k, L)); returns (k*n, heads, Dh)."""
    qg = q.unflatten(0, (-1, n)).transpose(1, 2)  # (k, heads, n, Dh)
    if kv_mask is None:
        kg, vg = (x.unflatten(0, (-1, n)).transpose(1, 2) for x in (k, v))
        mask = None
    else:
        kg, vg = k.transpose(1, 2), v.transpose(1, 2)  # (k, heads, L, Dh)
        mask = kv_mask[:, None, None, :]  # (k, 1, 1, L)
    og = _dense_attention(qg, kg, vg, mask)  # (k, heads, n, Dh)
    return og.transpose(1, 2).flatten(0, 1)  # (k * n, heads, Dh)


# Longest key sequence for which low-precision CPU attention runs as explicit matmuls. PyTorch's
# bf16 SDPA kernel on CPU is slow on short sequences (2 cores, 32 x 4 heads x 80 tokens, forward
# and backward: 18.8 ms vs 4.2 ms as two matmuls); from ~256 keys on its blocked kernel wins.
SHORT_KEYS = 256


def _dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) v over (..., n, Dh); mask broadcasts to (..., n, L), True = keep.

    SDPA, except for short sequences in bf16/fp16 (or under CPU autocast) on CPU: there two
    matmuls in that precision with the softmax in float32.
    """
    low = q.dtype in (torch.bfloat16, torch.float16) or (
        q.device.type == "cpu" and torch.is_autocast_enabled("cpu"))
    if q.device.type != "cpu" or not low or k.shape[-2] > SHORT_KEYS:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1).to(dtype) @ v


def _flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def _flex(q: Tensor, k: Tensor, v: Tensor, q_ids: Tensor, kv_ids: Tensor) -> Tensor:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def same_sample(b, h, qi, ki):
        return q_ids[qi] == kv_ids[ki]

    block = create_block_mask(same_sample, None, None, q.shape[0], k.shape[0], device=q.device)
    out = flex_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                         v.transpose(0, 1)[None], block_mask=block)
    return out[0].transpose(0, 1)


# --------------------------------------------------------------------------------------------
# 3D RoPE
# --------------------------------------------------------------------------------------------


def rope_axes_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels given to the (t, h, w) axes; each even, spatial axes equal, summing to head_dim."""
    if head_dim % 2:
        raise UserError(f"RoPE needs an even head dimension, got {head_dim}")
    spatial = 2 * (head_dim // 6)  # a third each, rounded down to even; time takes the rest
    return head_dim - 2 * spatial, spatial, spatial


def rope_angles(positions: Tensor, head_dim: int, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """(N, 3) positions -> (cos, sin), each (N, head_dim // 2), in float32."""
    parts = []
    for axis, dim in enumerate(rope_axes_dims(head_dim)):
        if dim == 0:
            continue
        freqs = theta ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
        parts.append(positions[:, axis, None].float() * freqs)  # (N, dim // 2)
    angles = torch.cat(parts, dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate consecutive channel pairs of x (N, heads, Dh) by the per-token angles."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (N, heads, Dh/2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return out.flatten(-2).type_as(x)


# --------------------------------------------------------------------------------------------
# Fixed sin-cos embeddings
# --------------------------------------------------------------------------------------------


def sincos_1d(pos: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(N,) positions -> (N, dim): [sin(pos * w_i), cos(pos * w_i)] for dim/2 frequencies."""
    omega = 1.0 / max_period ** (torch.arange(dim // 2, device=pos.device, dtype=torch.float64) / (dim / 2))
    angles = pos.double()[:, None] * omega  # (N, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


def sincos_2d(positions: Tensor, dim: int) -> Tensor:
    """(N, 3) (t, h, w) positions -> (N, dim) 2D sin-cos embedding of (h, w).

    Laid out as the DiT reference: the first half encodes the column (w), the second the row (h).
    The time position is ignored: this embedding belongs to the paper's image models.
    """
    if dim % 4:
        raise UserError(f"2D sin-cos embedding needs dim divisible by 4, got {dim}")
    return torch.cat([sincos_1d(positions[:, 2], dim // 2), sincos_1d(positions[:, 1], dim // 2)], -1)


def sincos_3d(positions: Tensor, dim: int) -> Tensor:
    """(N, 3) (t, h, w) positions -> (N, dim): sin-cos of t, then h, then w (even widths)."""
    space = dim // 6 * 2  # width for h and for w each; t takes the rest
    if dim - 2 * space < 2 or space < 2:
        raise UserError(f"3D sin-cos embedding needs dim >= 8, got {dim}")
    return torch.cat([sincos_1d(positions[:, 0], dim - 2 * space), sincos_1d(positions[:, 1], space),
                      sincos_1d(positions[:, 2], space)], -1)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(N,) timesteps (in DiT's 0..1000 scale) -> (N, dim) [cos, sin] features, as in DiT."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs  # (N, half)
    emb = torch.cat([angles.cos(), angles.sin()], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb
