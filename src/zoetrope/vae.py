"""Causal 3D convolutional VAE: the video compression network.

A video (B, 3, T, H, W) with pixels in [-1, 1] is encoded to a diagonal Gaussian over a latent
(B, C, t, h, w) and decoded back. Every temporal convolution is causal: it pads only on the past
side, by repeating the first frame, so output frame i never sees input frames after i. Temporal
downsampling keeps the first frame on its own (as in the causal VAEs of CogVideoX, arXiv
2408.06072; Wan, arXiv 2503.20314; LTX-Video, arXiv 2501.00103), so with the default factors
(4 in time, 8 in space) `1 + 4k` frames become `1 + k` latent frames, and an image is a one-frame
video. Latent frame i depends only on pixel frames <= 4 * i.

Conventions:
- `latent_shape` (module level, wrapped by `CausalVAE.latent_shape`) is the one place where pixel
  sizes become latent sizes; the pipeline, CLI and adapters call it instead of re-deriving it.
- Because every layer is causal, a video can be encoded or decoded a few latent frames at a time.
  Each causal conv keeps the tail of its padded input in a cache (a dict keyed by module) and
  prepends it to the next chunk; chunked results equal one-shot results up to float rounding,
  while memory stays flat in the clip length.
- Folding (`patch_size`, `temporal_patch_size`) puts p x p pixels of r frames into channels
  before the first conv (the first frame is repeated r - 1 times to fill its group, so it still
  stands alone). With `pixel_channels`, a per-pixel 1x1 conv + SiLU adds nonlinear features next
  to each pixel's raw values, and a per-pixel SiLU head corrects each output pixel (both run on the
  folded tensor, which is the same math per pixel). Without them the decoder's folded output is
  linear in a few features per patch, and the shapes demo VAE sat for thousands of steps near
  19 dB drawing blurred blobs of the wrong hue.
- Norms are GroupNorm within each frame, never across time, so they are causal and
  chunk-independent too. (An RMS norm over channels at each position, as in Wan's VAE, fit
  sparse moving-square clips far slower in our tests.)
- The DiT sees `encode_latent` output: (z - scaling_mean) / scaling_std, with the two numbers stored
  in the config and hence in config.json next to the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from . import weights
from .config import VAEConfig
from .errors import UserError

Cache = dict[nn.Module, Any]  # causal state carried from one chunk to the next


class VAEShapeError(UserError):
    """A video size the VAE cannot take (message is one line naming the nearest valid sizes)."""


def latent_shape(frames: int, height: int, width: int, *, channels: int, temporal: int,
                 spatial: int) -> tuple[int, int, int, int]:
    """(frames, height, width) -> latent (C, t, h, w), or a one-line VAEShapeError."""
    if frames < 1:
        raise VAEShapeError(f"num_frames={frames} must be at least 1; nearest valid: 1")
    if (frames - 1) % temporal:
        low = 1 + (frames - 1) // temporal * temporal
        raise VAEShapeError(f"num_frames={frames} is not 1 + {temporal}k; "
                            f"nearest valid: {low} or {low + temporal}")
    for name, size in (("height", height), ("width", width)):
        if size < spatial or size % spatial:
            low = size // spatial * spatial
            near = f"{low} or {low + spatial}" if low else f"{spatial}"
            raise VAEShapeError(f"{name}={size} is not a multiple of {spatial}; "
                                f"nearest valid: {near}")
    return channels, 1 + (frames - 1) // temporal, height // spatial, width // spatial


def pixel_shape(t: int, h: int, w: int, *, temporal: int, spatial: int) -> tuple[int, int, int]:
    """Latent (t, h, w) -> (frames, height, width); the inverse of `latent_shape`."""
    if min(t, h, w) < 1:
        raise VAEShapeError(f"latent size (t={t}, h={h}, w={w}) must be at least 1 in every axis")
    return 1 + (t - 1) * temporal, h * spatial, w * spatial


@dataclass
class DiagonalGaussian:
    """Posterior N(mean, exp(logvar)) over latents (B, C, t, h, w)."""

    mean: Tensor
    logvar: Tensor

    def __post_init__(self) -> None:
        self.logvar = self.logvar.clamp(-30.0, 20.0)  # keeps exp() finite in fp32

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw z = mean + std * eps; eps comes from `generator`'s device, then is moved."""
        if generator is None:
            eps = torch.randn_like(self.mean)
        else:
            eps = torch.randn(self.mean.shape, generator=generator, device=generator.device,
                              dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        """The most likely latent (the mean)."""
        return self.mean

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) summed over latent elements, per sample: (B,)."""
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(1)


# --------------------------------------------------------------------------------------------
# Causal building blocks. Every forward takes `cache`: None for one shot, a dict for chunks.
# --------------------------------------------------------------------------------------------


class CausalConv3d(nn.Module):
    """Conv3d padded 'same' in space and only on the past side in time (first frame repeated)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (3, 3, 3),
                 stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        kt, kh, kw = kernel
        self.kt, self.st = kt, stride[0]
        self.conv = nn.Conv3d(cin, cout, kernel, stride, padding=(0, kh // 2, kw // 2))

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        return self.conv(self.pad(x, cache))

    def pad(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        """Prepend the past: (B, C, T, H, W) -> (B, C, T + kt - 1 or cached, H, W)."""
        if self.kt == 1 and self.st == 1:
            return x
        if cache is not None and self in cache:
            x = torch.cat([cache[self], x], dim=2)  # continue the stream
        else:  # start of the video: kt - 1 copies of the first frame
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.kt - 1, -1, -1), x], dim=2)
        if cache is not None:  # keep the frames the next output window still needs
            used = (x.shape[2] - self.kt) // self.st + 1 if x.shape[2] >= self.kt else 0
            cache[self] = x[:, :, used * self.st:].clone()
        return x


class FrameGroupNorm(nn.Module):
    """GroupNorm over (channels of a group, H, W) of each frame: never mixes frames, so causal."""

    def __init__(self, channels: int):
        super().__init__()
        # About 4+ channels per group, at most 32 groups (the usual GroupNorm(32) for wide layers).
        self.norm = nn.GroupNorm(math.gcd(32, max(channels // 4, 1)), channels, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        return rearrange(self.norm(x), "(b t) c h w -> b c t h w", b=b)


class ResBlock(nn.Module):
    """norm -> SiLU -> conv, twice, plus a (1x1x1-projected) skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = FrameGroupNorm(cin), CausalConv3d(cin, cout)
        self.norm2, self.conv2 = FrameGroupNorm(cout), CausalConv3d(cout, cout)
        self.skip = CausalConv3d(cin, cout, (1, 1, 1)) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve H and W (strided 1x3x3 conv) and/or T (causal strided 3x1x1 conv: 1 + 2k -> 1 + k)."""

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.space = CausalConv3d(channels, channels, (1, 3, 3), (1, 2, 2)) if spatial else None
        # Window i covers frames 2i-2..2i, so output 0 sees frame 0 alone (the image frame).
        self.time = CausalConv3d(channels, channels, (3, 1, 1), (2, 1, 1)) if temporal else None

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        # Each conv learns a residual over average pooling: a parameter-free shortcut in the
        # spirit of DC-AE (Chen et al., arXiv 2410.10733), so a fresh block passes its input on.
        if self.space is not None:
            x = self.space(x) + F.avg_pool3d(x, (1, 2, 2))  # (B, C, T, H/2, W/2)
        if self.time is not None:
            padded = self.time.pad(x, cache)  # (B, C, 2 + T, H, W) in one shot
            x = self.time.conv(padded)  # (B, C, 1 + (T-1)/2, H, W)
            n = x.shape[2]  # shortcut: mean of frames 2i-1 and 2i (padded 2i+1, 2i+2)
            x = x + (padded[:, :, 1::2][:, :, :n] + padded[:, :, 2::2][:, :, :n]) / 2
        return x


class Upsample(nn.Module):
    """Nearest x2 in H, W and/or T (the first frame stays single: 1 + k -> 1 + 2k), then a conv."""

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.conv = CausalConv3d(channels, channels, (3 if temporal else 1, 3, 3))

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        if self.temporal:
            starting = cache is None or self not in cache
            x = repeat(x, "b c t h w -> b c (t r) h w", r=2)
            if starting:  # the first latent frame is one pixel frame, not two
                x = x[:, :, 1:]
            if cache is not None:
                cache[self] = True
        if self.spatial:
            x = repeat(x, "b c t h w -> b c t (h a) (w b2)", a=2, b2=2)
        return x + self.conv(x, cache)  # a residual over nearest upsampling, as in Downsample


class Stage(nn.Module):
    """Residual blocks at one resolution, optionally followed by a resampler."""

    def __init__(self, cin: int, cout: int, depth: int, resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout) for i in range(depth))
        self.resample = resample

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, cache)
        return x if self.resample is None else self.resample(x, cache)


def _resample_plan(config: VAEConfig) -> list[tuple[bool, bool]]:
    """(spatial, temporal) flags per downsampling step; time is halved at the deepest steps."""
    n_space = (config.spatial_downsample // config.patch_size).bit_length() - 1
    n_time = (config.temporal_downsample // config.temporal_patch_size).bit_length() - 1
    steps = max(n_space, n_time)
    return [(i < n_space, i >= steps - n_time) for i in range(steps)]


def _pointwise(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """A 1x1x1 `conv` applied along dim 1 of x (B, Cin, ...) of any rank: (B, Cout, ...)."""
    weight = conv.weight.flatten(1)  # (Cout, Cin)
    bias = conv.bias.view(-1, *[1] * (x.dim() - 2))
    return torch.einsum("bi...,oi->bo...", x, weight.to(x.dtype)) + bias.to(x.dtype)


class Encoder(nn.Module):
    """Pixels (B, 3, T, H, W) -> posterior parameters (B, 2C, t, h, w)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mult]
        plan = _resample_plan(config)
        self.patch, self.tpatch = config.patch_size, config.temporal_patch_size
        # Optional per-pixel features next to the raw pixels, so the folded patch carries
        # nonlinear functions of each pixel (e.g. "this pixel is object") rather than raw values only.
        pixel = config.pixel_channels
        self.pixel_in = nn.Conv3d(config.in_channels, pixel, 1) if pixel else None
        folded = (config.in_channels + pixel) * self.tpatch * self.patch**2
        self.conv_in = CausalConv3d(folded, widths[0],
                                    (1, 3, 3) if pixel else (3, 3, 3))
        self.stages = nn.ModuleList(
            Stage(widths[max(i - 1, 0)], w, config.num_res_blocks,
                  Downsample(w, *plan[i]) if i < len(plan) else None)
            for i, w in enumerate(widths))
        self.mid = ResBlock(widths[-1], widths[-1])
        self.norm_out = FrameGroupNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], 2 * config.latent_channels)

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        r, p = self.tpatch, self.patch  # fold r x p x p pixel blocks into channels
        if r > 1:
            if cache is None or self not in cache:  # start: repeat frame 0 to fill its group
                x = torch.cat([x[:, :, :1].expand(-1, -1, r - 1, -1, -1), x], dim=2)
            if cache is not None:
                cache[self] = True
        x = rearrange(x, "b c (t r) (h p) (w q) -> b c (r p q) t h w",
                      r=r, p=p, q=p)  # (B, 3, rpp, T/r, H/p, W/p)
        if self.pixel_in is not None:  # per-pixel features, computed on the folded raw pixels
            x = torch.cat([x, F.silu(_pointwise(self.pixel_in, x))], dim=1)  # (B, 3 + P, ...)
        x = x.flatten(1, 2)  # (B, crpp, T/r, H/p, W/p)
        x = self.conv_in(x, cache)  # (B, D0, T, H/p, W/p)
        for stage in self.stages:
            x = stage(x, cache)
        x = self.mid(x, cache)  # (B, D, t, h, w)
        return self.conv_out(F.silu(self.norm_out(x)), cache)  # (B, 2C, t, h, w)


class Decoder(nn.Module):
    """Latent (B, C, t, h, w) -> pixels (B, 3, T, H, W)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mult]
        plan = _resample_plan(config)
        self.conv_in = CausalConv3d(config.latent_channels, widths[-1])
        self.mid = ResBlock(widths[-1], widths[-1])
        # Mirror of the encoder: stage i's blocks, then undo the step that led into stage i.
        self.stages = nn.ModuleList(
            Stage(widths[min(i + 1, len(widths) - 1)], widths[i], config.num_res_blocks,
                  Upsample(widths[i], *plan[i - 1]) if 0 < i <= len(plan) else None)
            for i in reversed(range(len(widths))))
        self.norm_out = FrameGroupNorm(widths[0])
        self.patch, self.tpatch = config.patch_size, config.temporal_patch_size
        # A folded patch out of conv_out is linear in a few features; with pixel_channels P, the
        # conv also gives P features per pixel, and a per-pixel SiLU MLP adds their nonlinear
        # correction (a sharp edge in any color is a product of "where" and "which color").
        pixel = config.pixel_channels
        folded = (config.in_channels + pixel) * self.tpatch * self.patch**2
        self.conv_out = CausalConv3d(widths[0], folded,
                                     (1, 3, 3) if pixel else (3, 3, 3))
        self.pixel_out = nn.Conv3d(pixel, config.in_channels, 1) if pixel else None

    def forward(self, z: Tensor, cache: Cache | None = None) -> Tensor:
        x = self.mid(self.conv_in(z, cache), cache)  # (B, D, t, h, w)
        for stage in self.stages:
            x = stage(x, cache)
        x = self.conv_out(F.silu(self.norm_out(x)), cache)  # (B, crpp, T/r, H/p, W/p)
        r, p = self.tpatch, self.patch
        x = rearrange(x, "b (c n) t h w -> b c n t h w", n=r * p * p)  # (B, c, rpp, T/r, H/p, W/p)
        if self.pixel_out is not None:  # per-pixel head, applied before unfolding (same result)
            rgb = x.shape[1] - self.pixel_out.in_channels
            x = x[:, :rgb] + _pointwise(self.pixel_out, F.silu(x[:, rgb:]))
        x = rearrange(x, "b c (r p q) t h w -> b c (t r) (h p) (w q)",
                      r=r, p=p, q=p)  # (B, 3, T + r - 1, H, W)
        if r > 1:
            if cache is None or self not in cache:  # drop the copies of frame 0
                x = x[:, :, r - 1:]
            if cache is not None:
                cache[self] = True
        return x


# --------------------------------------------------------------------------------------------
# The VAE
# --------------------------------------------------------------------------------------------


class VAEShapes:
    """`latent_shape` / `pixel_shape` from `self.config` (a VAEConfig); shared by every VAE class."""

    config: VAEConfig

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(frames, height, width) -> (C, t, h, w); VAEShapeError for sizes it cannot take."""
        c = self.config
        return latent_shape(frames, height, width, channels=c.latent_channels,
                            temporal=c.temporal_downsample, spatial=c.spatial_downsample)

    def pixel_shape(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        """Latent (t, h, w) -> (frames, height, width)."""
        c = self.config
        return pixel_shape(t, h, w, temporal=c.temporal_downsample, spatial=c.spatial_downsample)

    def latent_frame_pixels(self, frames: int) -> list[range]:
        """The pixel frames each latent frame of a `frames`-frame clip holds, latent frame j at j.

        With temporal factor 4: latent frame 0 is pixel frame 0 alone, latent frame j >= 1 is
        pixel frames 4j-3..4j. Read off `latent_shape` and `pixel_shape`, not re-derived.
        """
        s = self.config.spatial_downsample  # any valid height and width will do
        t = self.latent_shape(frames, s, s)[1]
        ends = [self.pixel_shape(j + 1, 1, 1)[0] for j in range(t)]  # frames of j + 1 latents
        return [range(a, b) for a, b in zip([0] + ends[:-1], ends)]


class CausalVAE(VAEShapes, nn.Module):
    """Causal 3D conv VAE: (B, 3, 1 + 4k, H, W) <-> latent (B, C, 1 + k, H/8, W/8) by default."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Residual branches start at zero (identity blocks); the posterior starts nearly sharp."""
        for module in self.modules():
            if isinstance(module, ResBlock):
                nn.init.zeros_(module.conv2.conv.weight)
                nn.init.zeros_(module.conv2.conv.bias)
        # With the usual init, logvar ~ 0: the decoder would see unit noise on top of a latent of
        # about unit size, and with a KL weight ~1e-6 Adam needs thousands of steps to shrink it.
        # Starting at std = e^-3 ~ 0.05 lets reconstruction learn from the first step.
        logvar = self.encoder.conv_out.conv
        c = self.config.latent_channels
        nn.init.zeros_(logvar.weight[c:])
        nn.init.constant_(logvar.bias[c:], -6.0)

    # -- encode / decode ---------------------------------------------------------------------

    def encode(self, video: Tensor, chunk_size: int | None = None) -> DiagonalGaussian:
        """Pixels (B, 3, T, H, W) -> posterior; `chunk_size` latent frames at a time if given."""
        _, t, _, _ = self.latent_shape(*video.shape[2:])
        if chunk_size is None:
            moments = self.encoder(video)  # (B, 2C, t, h, w)
        else:
            cache: Cache = {}
            moments = torch.cat([self.encoder(video[:, :, a:b], cache)
                                 for a, b in self._pixel_chunks(t, chunk_size)], dim=2)
        mean, logvar = moments.chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: Tensor, chunk_size: int | None = None) -> Tensor:
        """Latent (B, C, t, h, w) -> pixels (B, 3, T, H, W), unclamped; chunked if `chunk_size`."""
        if chunk_size is None:
            return self.decoder(z)
        frames, height, width = self.pixel_shape(*z.shape[2:])
        out = z.new_empty(z.shape[0], self.config.in_channels, frames, height, width)
        cache: Cache = {}
        for (a, b), start in zip(self._pixel_chunks(z.shape[2], chunk_size),
                                 range(0, z.shape[2], chunk_size)):
            out[:, :, a:b] = self.decoder(z[:, :, start:start + chunk_size], cache)
        return out

    def _pixel_chunks(self, t: int, chunk_size: int) -> list[tuple[int, int]]:
        """Pixel frame ranges of latent frames [i, i + chunk_size): latent j <-> 4j-3..4j."""
        if chunk_size < 1:
            raise UserError(f"chunk_size must be at least 1, got {chunk_size}")
        f = self.config.temporal_downsample
        ends = [min(i + chunk_size, t) for i in range(0, t, chunk_size)]
        bounds = [0] + [1 + (e - 1) * f for e in ends]
        return list(zip(bounds[:-1], bounds[1:]))

    def forward(self, video: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, DiagonalGaussian]:
        """Reconstruct a video through a sampled latent: (reconstruction, posterior)."""
        posterior = self.encode(video)
        return self.decode(posterior.sample(generator)), posterior

    # -- what the DiT sees -------------------------------------------------------------------

    def encode_latent(self, video: Tensor, generator: torch.Generator | None = None,
                      sample: bool = False, chunk_size: int | None = None) -> Tensor:
        """Pixels -> normalised latent (z - mean) / std; the posterior mean unless `sample`."""
        posterior = self.encode(video, chunk_size)
        z = posterior.sample(generator) if sample else posterior.mode()
        return (z - self.config.scaling_mean) / self.config.scaling_std

    def decode_latent(self, z: Tensor, chunk_size: int | None = None) -> Tensor:
        """Normalised latent -> pixels (unclamped); the inverse of `encode_latent`."""
        return self.decode(z * self.config.scaling_std + self.config.scaling_mean, chunk_size)

    # -- weights -----------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json (including the latent scaling) and model.safetensors."""
        weights.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "CausalVAE":
        """Load a VAE written by `save_pretrained` (in eval mode)."""
        return weights.load_pretrained(cls, VAEConfig, directory)


# --------------------------------------------------------------------------------------------
# Training helpers
# --------------------------------------------------------------------------------------------


def psnr(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for pixels in [-1, 1] (peak-to-peak 2)."""
    mse = (reconstruction.clamp(-1, 1) - target).pow(2).mean()
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


def vae_loss(vae: CausalVAE, video: Tensor, kl_weight: float = 1e-6,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """MSE reconstruction + kl_weight * KL, both per pixel; returns (loss, {rec, kl, psnr})."""
    recon, posterior = vae(video, generator)  # (B, 3, T, H, W)
    # MSE, not L1: on mostly-black clips L1's median pull keeps the output black for thousands of
    # steps, while MSE starts drawing the shapes at once (measured on moving squares).
    rec = (recon - video).pow(2).mean()
    # The KL is summed over latent elements and divided by the pixel count, so `kl_weight` means
    # what it means for summed losses (Rombach et al., arXiv 2112.10752, use 1e-6).
    kl = posterior.kl().mean() / video[0].numel()
    loss = rec + kl_weight * kl
    return loss, {"rec": rec.item(), "kl": kl.item(), "psnr": psnr(recon.detach(), video).item()}


@torch.no_grad()
def set_scaling_from_data(vae: CausalVAE, latents: Tensor | Iterable[Tensor]
                          ) -> tuple[float, float]:
    """Set config.scaling_mean/std to the mean/std of raw latents (one tensor or an iterable)."""
    total, total_sq, count = 0.0, 0.0, 0
    for z in [latents] if isinstance(latents, Tensor) else latents:
        z = z.detach().double()
        total, total_sq = total + z.sum().item(), total_sq + z.pow(2).sum().item()
        count += z.numel()
    if count < 2:
        raise UserError("set_scaling_from_data needs at least two latent values")
    mean = total / count
    std = max((total_sq / count - mean * mean) * count / (count - 1), 1e-12) ** 0.5
    vae.config.scaling_mean, vae.config.scaling_std = mean, std
    return mean, std
