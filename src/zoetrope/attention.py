"""Attention over packed sequences, and the position encodings the DiT uses.

`attention` is the single attention function of the model. Queries and keys carry sample ids;
a query attends only to keys of its own sample (block-diagonal mask), so a packed batch gives the
same result as each sample run alone. Backends (`BACKENDS`, chosen when the model is built):
"sdpa", PyTorch SDPA (the reference, any device; in the model, per group of equal-length samples
through `packed_attention`), and "flex", flex attention with a block mask over the whole packed
sequence (CUDA; skips the masked blocks, fused only under torch.compile). "auto" takes flex where
it is fused (CUDA under torch.compile) and SDPA elsewhere (`resolve_backend`).

`packed_attention` runs each run of equal-length samples (`Layout`) as one dense batch, cutting the
sequence with views. Any sample order is correct; the DiT puts equal lengths side by side
(`group_order`) so that each length is one run, whatever order the data came in.

CPU-specific tuning lives in one place, the "CPU tuning" section: short low-precision sequences on
CPU skip SDPA for two matmuls (4x faster at 80 keys on 2 cores, about even at 256).

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


BACKENDS = ("auto", "sdpa", "flex")


def check_backend(backend: str) -> str:
    """`backend` if it is one of BACKENDS, else a one-line UserError naming them."""
    if backend not in BACKENDS:
        raise UserError(f"unknown attention backend {backend!r}; valid: {', '.join(BACKENDS)}")
    return backend


def resolve_backend(backend: str, x: Tensor) -> str:
    """"sdpa" or "flex" for tensors like `x`: "auto" takes flex only on CUDA under torch.compile.

    Without compile, flex runs an unfused reference that builds the whole (N, N) score matrix,
    slower and larger than dense SDPA per group of equal-length samples.
    """
    if backend != "auto":
        return backend
    fused = x.is_cuda and torch.compiler.is_compiling() and _flex_available()
    return "flex" if fused else "sdpa"


def attention(q: Tensor, k: Tensor, v: Tensor, q_ids: Tensor, kv_ids: Tensor,
              backend: str = "auto") -> Tensor:
    """Block-diagonal attention: (N, heads, Dh) queries over (M, heads, Dh) keys/values.

    q_ids (N,) and kv_ids (M,) are sample ids; a query sees only keys with the same id.
    backend: one of BACKENDS (see `resolve_backend`).
    """
    if resolve_backend(check_backend(backend), q) == "flex":
        return _flex(q, k, v, q_ids, kv_ids)
    mask = q_ids[:, None] == kv_ids[None, :]  # (N, M)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
        attn_mask=mask[None, None])  # (1, heads, N, Dh)
    return out[0].transpose(0, 1)  # (N, heads, Dh)


@dataclass
class Layout:
    """How a packed sequence splits into samples: runs of adjacent samples of equal length.

    Each run attends as one dense batch, so the cost is the sum of n_i^2 over samples instead of
    N^2 for the whole sequence, and runs are cut from the sequence with views (no gather). Tokens
    of a sample are contiguous, samples in packing order (as `pack` lays them out).
    """

    runs: list[tuple[int, int]]  # (samples in the run, tokens per sample), in sequence order

    @property
    def num_tokens(self) -> int:
        return sum(count * n for count, n in self.runs)


def make_layout(lengths: list[int]) -> Layout:
    """Cut per-sample token counts into maximal runs of equal length."""
    runs: list[tuple[int, int]] = []
    for n in lengths:
        if runs and runs[-1][1] == n:
            runs[-1] = (runs[-1][0] + 1, n)
        else:
            runs.append((1, n))
    return Layout(runs)


def group_order(lengths: list[int]) -> list[int] | None:
    """A sample order putting equal lengths side by side (first appearance first, stable), so each
    length is one run; None when they already are (the order is then left alone)."""
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    if len(by_length) == len(make_layout(lengths).runs):
        return None
    return [i for samples in by_length.values() for i in samples]


def packed_attention(q: Tensor, k: Tensor, v: Tensor, layout: Layout,
                     kv_mask: Tensor | None = None) -> Tensor:
    """Attention per sample via `layout`: q (N, heads, Dh) over packed k, v (N, heads, Dh)
    (self-attention) or over padded per-sample k, v (B, L, heads, Dh) with kv_mask (B, L)
    (cross-attention, True = real token)."""
    tokens = [count * n for count, n in layout.runs]
    if kv_mask is not None:
        counts = [count for count, _ in layout.runs]
        kvs = zip(k.split(counts), v.split(counts), kv_mask.split(counts))
    else:
        kvs = zip(k.split(tokens), v.split(tokens), [None] * len(tokens))
    outs = [_run_attention(qr, kr, vr, mask, n)
            for qr, (kr, vr, mask), (_, n) in zip(q.split(tokens), kvs, layout.runs)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _run_attention(q: Tensor, k: Tensor, v: Tensor, kv_mask: Tensor | None, n: int) -> Tensor:
    """One run of equal-length samples: q (k*n, heads, Dh) over their own k, v (packed like q,
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


def _dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) v over (..., n, Dh); mask broadcasts to (..., n, L), True = keep."""
    if use_cpu_matmuls(q, k):
        return cpu_matmul_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# --------------------------------------------------------------------------------------------
# CPU tuning: the one place that picks kernels for CPUs
# --------------------------------------------------------------------------------------------

# Longest key sequence for which low-precision CPU attention runs as explicit matmuls. PyTorch's
# bf16 SDPA kernel on CPU is slow on short sequences (2 cores, 32 x 4 heads x 80 tokens, forward
# and backward: 18.8 ms vs 4.2 ms as two matmuls); from ~256 keys on its blocked kernel wins.
CPU_MATMUL_MAX_KEYS = 256


def use_cpu_matmuls(q: Tensor, k: Tensor) -> bool:
    """Whether attention of q over k takes `cpu_matmul_attention` instead of SDPA: on CPU, in
    bf16/fp16 (or under CPU autocast), with at most CPU_MATMUL_MAX_KEYS keys."""
    low = q.dtype in (torch.bfloat16, torch.float16) or (
        q.device.type == "cpu" and torch.is_autocast_enabled("cpu"))
    return q.device.type == "cpu" and low and k.shape[-2] <= CPU_MATMUL_MAX_KEYS


def cpu_matmul_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Attention as two matmuls in the low precision, with the softmax in float32."""
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1).to(dtype) @ v


# --------------------------------------------------------------------------------------------
# Flex attention
# --------------------------------------------------------------------------------------------


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
