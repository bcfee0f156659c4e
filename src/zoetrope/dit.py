"""Diffusion Transformer over packed spacetime patches (Peebles and Xie, arXiv 2212.09748).

`DiT(config)(packed, t, text, text_mask)` denoises the tokens of a `Packed` batch. Each token has
its own timestep, so samples can sit at different noise levels and conditioning frames can be
clean (t = 0). Blocks are adaLN-Zero: the conditioning vector c = embed(t) [+ text pool | + class]
regresses shift/scale/gate of each sub-layer, and the gates and output layer start at zero so
every block starts as the identity. Text enters through cross-attention (PixArt-alpha style,
arXiv 2310.00426), masked per sample. Positions are 3D RoPE from token ids (any size) or, for
the paper's class-conditional image presets, its fixed 2D sin-cos embedding.

The conditioning is computed once per distinct (sample, timestep) pair and gathered per token,
so adaLN costs what it costs in the paper (per sample), not per token.

Attention is chosen when the model is built: `DiT(config, attention="auto" | "sdpa" | "flex")`
(see `attention.resolve_backend`). Samples may come in any order: the forward permutes tokens
once so that samples of equal length sit side by side (every attention call then cuts the
sequence into dense groups with views) and undoes the permutation on the output. Tokens only meet
inside attention, which is per sample, so the order changes nothing but speed.

Timesteps are t in [0, 1] (t = 0 clean); the embedder sees t * 1000, as DiT saw integer steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import weights
from .attention import (Layout, apply_rope, attention, check_backend, group_order, make_layout,
                        packed_attention, resolve_backend, rope_angles, sincos_2d, sincos_3d,
                        timestep_embedding)
from .config import DiTConfig
from .errors import UserError
from .patches import Packed, pack, unpack

FREQ_DIM = 256  # sinusoidal features fed to the timestep MLP (DiT's choice)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> (N, D) through sinusoidal features of t * 1000 and a 2-layer MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t * 1000, FREQ_DIM).to(self.mlp[0].weight.dtype))


class SelfAttention(nn.Module):
    """Multi-head self-attention over a packed sequence, with QK-norm and RoPE.

    `backend`: "sdpa" (dense SDPA per run of equal-length samples; flash kernels on CUDA), "flex"
    (one flex-attention call with a block-diagonal block mask; pair with torch.compile on CUDA) or
    "auto" (`attention.resolve_backend`). Fixed when the model is built.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, backend: str = "auto"):
        super().__init__()
        self.num_heads = num_heads
        self.backend = check_backend(backend)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        head_dim = dim // num_heads
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()

    def forward(self, x: Tensor, ids: Tensor, layout: Layout, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).unbind(1)  # 3 x (N, H, Dh)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if resolve_backend(self.backend, q) == "flex":
            return self.proj(attention(q, k, v, ids, ids, backend="flex").flatten(1))
        return self.proj(packed_attention(q, k, v, layout).flatten(1))  # (N, D)


class CrossAttention(nn.Module):
    """Tokens attend to the text tokens of their own sample."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        head_dim = dim // num_heads
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()

    def forward(self, x: Tensor, layout: Layout, text: Tensor, text_mask: Tensor) -> Tensor:
        q = self.q_norm(self.q(x).unflatten(-1, (self.num_heads, -1)))  # (N, H, Dh)
        k, v = self.kv(text).unflatten(-1, (2, self.num_heads, -1)).unbind(2)  # 2 x (B, L, H, Dh)
        return self.proj(packed_attention(q, self.k_norm(k), v, layout, text_mask).flatten(1))


class DiTBlock(nn.Module):
    """adaLN-Zero block: self-attention, optional text cross-attention, MLP."""

    def __init__(self, config: DiTConfig, attention: str = "auto"):
        super().__init__()
        dim = config.dim
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, config.num_heads, config.qk_norm, attention)
        self.cross = None
        if config.text_dim:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross = CrossAttention(dim, config.num_heads, config.qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * config.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, cond_index: Tensor, ids: Tensor, layout: Layout, rope,
                text: Tensor | None, text_mask: Tensor | None) -> Tensor:
        # (G, 6D) computed once per group -> (N, 6D); index_select, not [], whose backward (an
        # accumulating index_put) took 10x longer on CPU
        mod = self.adaLN_modulation(c).index_select(0, cond_index)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod.chunk(6, dim=-1)
        x = x + gate_a * self.attn(modulate(self.norm1(x), shift_a, scale_a), ids, layout, rope)
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), layout, text, text_mask)
        return x + gate_m * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    """adaLN-modulated norm and a linear map back to patch values."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor, cond_index: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).index_select(0, cond_index).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


@dataclass
class _Grouping:
    """A permutation of packed tokens that puts samples of equal length side by side."""

    order: Tensor  # (B,) the sample at each new place
    index: Tensor  # (N,) the token at each new place
    inverse: Tensor  # (N,) the new place of each token
    lengths: list[int]  # tokens per sample, in the new order

    @classmethod
    def of(cls, packed: Packed) -> _Grouping | None:
        """The grouping of `packed` (`attention.group_order`), or None when it needs none."""
        lengths = packed.lengths
        order = group_order(lengths)
        if order is None:
            return None
        device = packed.tokens.device
        starts = [0]
        for n in lengths:
            starts.append(starts[-1] + n)
        index = torch.cat([torch.arange(starts[i], starts[i + 1], device=device) for i in order])
        inverse = torch.empty_like(index)
        inverse[index] = torch.arange(len(index), device=device)
        return cls(torch.tensor(order, device=device), index, inverse, [lengths[i] for i in order])

    def tokens(self, x: Tensor) -> Tensor:
        """A per-token tensor (N, ...) in the grouped order."""
        return x.index_select(0, self.index)

    def samples(self, x: Tensor) -> Tensor:
        """A per-sample tensor (B, ...) in the grouped order."""
        return x.index_select(0, self.order)


class DiT(nn.Module):
    """Packed-sequence Diffusion Transformer; see the module docstring.

    attention: the self-attention backend, "auto" (flex on CUDA under torch.compile, else SDPA),
    "sdpa" or "flex"; a property of this instance, never of the class.
    """

    def __init__(self, config: DiTConfig, attention: str = "auto"):
        super().__init__()
        self.config = config
        self.attention = check_backend(attention)
        pt, ph, pw = config.patch_size
        volume = pt * ph * pw
        self.x_embedder = nn.Linear(config.in_channels * volume, config.dim)
        self.t_embedder = TimestepEmbedder(config.dim)
        if config.num_classes:  # one extra row: the null class used for guidance
            self.y_embedder = nn.Embedding(config.num_classes + 1, config.dim)
        if config.text_dim:
            self.text_proj = nn.Sequential(nn.Linear(config.text_dim, config.dim), nn.GELU(approximate="tanh"),
                                           nn.Linear(config.dim, config.dim))
            if config.pooled_text:
                self.pool_proj = nn.Linear(config.dim, config.dim)
        self.blocks = nn.ModuleList([DiTBlock(config, attention) for _ in range(config.depth)])
        self.final_layer = FinalLayer(config.dim, config.out_channels * volume)
        if not any(p.is_meta for p in self.parameters()):
            self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation: xavier linears, N(0, 0.02) embeddings, zero adaLN and output."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if self.config.num_classes:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if block.cross is not None:  # cross-attention also starts as a no-op
                nn.init.zeros_(block.cross.proj.weight)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, packed: Packed, t: Tensor, text: Tensor | None = None,
                text_mask: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        """Predict for every token: (N, C_out * pt * ph * pw).

        t: (B,) per sample or (N,) per token, in [0, 1]. text: (B, L, text_dim) with a bool
        mask (B, L) (True = real token). labels: (B,) class ids (num_classes = null class).
        """
        group_t, group_ids, cond_index = self._cond_groups(t, packed)
        x = self.x_embedder(packed.tokens)  # (N, D)
        c = self.t_embedder(group_t)  # (G, D)
        if self.config.num_classes:
            c = c + self.y_embedder(labels)[group_ids]
        x, rope = self._positions(x, packed.positions)
        txt, txt_mask = None, None
        if self.config.text_dim:
            txt, txt_mask, pooled = self._embed_text(text, text_mask, packed.num_samples)
            if self.config.pooled_text:
                c = c + self.pool_proj(pooled)[group_ids]
        ids, lengths = packed.sample_ids, packed.lengths
        grouping = _Grouping.of(packed)  # None when equal lengths already sit side by side
        if grouping is not None:  # every per-token and per-sample input moves with its token
            x, cond_index, ids = (grouping.tokens(v) for v in (x, cond_index, ids))
            rope = None if rope is None else (grouping.tokens(rope[0]), grouping.tokens(rope[1]))
            txt, txt_mask = (None if v is None else grouping.samples(v) for v in (txt, txt_mask))
            lengths = grouping.lengths
        layout = make_layout(lengths)
        for block in self.blocks:
            x = block(x, c, cond_index, ids, layout, rope, txt, txt_mask)
        out = self.final_layer(x, c, cond_index)  # (N, C_out * pt * ph * pw)
        return out if grouping is None else out.index_select(0, grouping.inverse)

    def forward_image(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """The paper's image interface: (B, C, H, W) latents -> (B, C_out, H, W) predictions.

        t: (B,) integer DDPM steps 0..999; y: (B,) class labels, num_classes being the null class
        of guidance. For a checkpoint of facebookresearch/DiT converted by `zoetrope convert dit`
        this returns what that code's `DiT.forward(x, t, y)` returns: eps, then (learned sigma)
        the variance interpolation v, on the channel axis. The steps reach the timestep embedder
        as exact integers (t / 1000 in float64, which it multiplies by 1000).
        """
        if not self.config.num_classes or x.ndim != 4 or self.config.patch_size[0] != 1:
            raise UserError(f"forward_image needs a class-conditional image DiT and x (B, C, H, W), "
                            f"got num_classes={self.config.num_classes}, x {tuple(x.shape)}")
        packed = pack(list(x[:, :, None]), self.config.patch_size)  # B latents (C, 1, H, W)
        exact = torch.float32 if x.device.type == "mps" else torch.float64  # MPS has no float64
        out = self(packed, t.to(exact) / 1000, labels=y)  # (N, C_out * ph * pw)
        return torch.stack(unpack(out, packed))[:, :, 0]  # (B, C_out, H, W)

    def _positions(self, x: Tensor, positions: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Add the absolute embedding (sincos, rope+abs) to x (N, D); RoPE angles (N, Dh/2) x 2."""
        if self.config.pos_embed == "sincos":
            return x + sincos_2d(positions, self.config.dim).to(x.dtype), None
        rope = rope_angles(positions, self.config.dim // self.config.num_heads, self.config.rope_theta)
        if self.config.pos_embed == "rope+abs":
            x = x + sincos_3d(positions, self.config.dim).to(x.dtype)
        return x, rope

    @staticmethod
    def _cond_groups(t: Tensor, packed: Packed) -> tuple[Tensor, Tensor, Tensor]:
        """Distinct (sample, t) pairs: their t (G,), sample ids (G,), and each token's group (N,)."""
        ids = packed.sample_ids
        if t.shape[0] == packed.num_samples:  # one timestep per sample: groups are samples
            return t, torch.arange(packed.num_samples, device=t.device), ids
        if t.shape[0] != packed.num_tokens:
            raise UserError(f"t must have one value per sample ({packed.num_samples}) or per token "
                            f"({packed.num_tokens}), got {t.shape[0]}")
        keys = torch.stack([ids.to(t.dtype), t], dim=-1)
        groups, cond_index = torch.unique(keys, dim=0, return_inverse=True)  # (G, 2), (N,)
        return groups[:, 1], groups[:, 0].long(), cond_index

    def _embed_text(self, text: Tensor | None, mask: Tensor | None, num_samples: int):
        """Project text: (B, L, D) tokens, (B, L) mask (True = real), and the pooled (B, D)."""
        if text is None:
            raise UserError("this DiT is text-conditioned: pass text and text_mask")
        if text.shape[0] != num_samples:
            raise UserError(f"text has {text.shape[0]} rows for {num_samples} packed samples")
        emb = self.text_proj(text.to(self.x_embedder.weight.dtype))  # (B, L, D)
        if mask is None:  # every token is real
            return emb, torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device), emb.mean(1)
        if not mask.any(dim=1).all():
            raise UserError("every prompt needs at least one unmasked text token")
        w = mask.to(emb.dtype)[..., None]  # (B, L, 1)
        return emb, mask.bool(), (emb * w).sum(1) / w.sum(1)

    # ---- weights -------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        weights.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, attention: str = "auto") -> DiT:
        """Load a DiT directory; `attention` is its backend (not stored: it suits the machine)."""
        return weights.load_pretrained(cls, DiTConfig, directory, build={"attention": attention})


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def forward_flops(config: DiTConfig, latent_shape: tuple[int, int, int, int], text_len: int = 0) -> int:
    """Forward multiply-adds for one sample, counted by running the model on the meta device.

    PyTorch's FlopCounterMode counts 2 FLOPs per multiply-add; the DiT paper (Table 4) counts
    multiply-adds, so the result is halved to be comparable with its GFLOPs.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from .patches import pack

    with torch.device("meta"):
        model = DiT(config)
        packed = pack([torch.zeros(latent_shape)], config.patch_size)
        t = torch.zeros(1)
        text = torch.zeros(1, max(text_len, 1), config.text_dim) if config.text_dim else None
        labels = torch.zeros(1, dtype=torch.long) if config.num_classes else None
        counter = FlopCounterMode(display=False)
        with counter:
            model(packed, t, text, None, labels)
    return counter.get_total_flops() // 2
