"""Memory a generation request needs, estimated before any work, and the memory there is.

The estimate counts what generation adds on top of the loaded models, in the two phases that can
run out of memory:

- DiT denoising. Inference keeps one block's activations at a time, each (tokens, width) or a
  small multiple of the width: x and its residual, the norms, per-token adaLN modulation (6 widths,
  gathered per token), q/k/v, the MLP's hidden (mlp_ratio widths) before and after GELU, the
  cross-attention's output. Self-attention runs through SDPA's blocked kernel on one run of
  equal-length samples, which never builds the (n, n) score matrix, so memory is linear in the
  tokens. Guidance doubles the tokens (both branches run as one packed call). Measured on the
  bundled model (D = 256, mlp_ratio 4, CPU, fp32, peak RSS growth while denoising):
  17x256x256 (2,560 tokens with guidance) +63 MB, 65x256x256 (8,704) +225 MB, 17x512x512 (10,240)
  +269 MB, i.e. 24-26 float32 widths per token; DIT_WIDTHS = 32 leaves a margin over that.
- VAE decode. The whole latent is decoded at once; the largest activations are those of the
  full-resolution stage (frames x height x width pixels x its channels), a few alive at a time (a
  conv's input and output, a norm's, the skip). Measured on the bundled model (8 channels at full
  resolution): peak RSS growth 17x512x512 +620 MB, 65x256x256 +524 MB, i.e. 31-35 float32 planes
  of (T, H, W); DECODE_PLANES_PER_CHANNEL * 8 + DECODE_PLANES = 38 planes.
- A fixed OVERHEAD_BYTES (allocator pools, kernel workspaces, the output arrays of small clips):
  17x256x256 grew by 200 MB where the two terms above give 162 MB.

Checked against those measurements (peak RSS growth over the loaded model, 1 step, guidance on):
estimate / measured = 226 / 200 MB (17x256x256), 710 / 620 MB (17x512x512), 682 / 524 MB
(65x256x256). A 4096x4096 request is estimated at about 40 GB (the issue saw 11.5 GB resident and
still climbing at step 0 of the DiT, before the larger decode).

The limit is the memory available now: on CUDA the device's free memory
(`torch.cuda.mem_get_info`), elsewhere the kernel's MemAvailable (/proc/meminfo), which already
excludes the loaded models. Where neither can be read the check is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .errors import UserError

FLOAT_BYTES = 4  # inference runs in float32
DIT_WIDTHS = 32  # float32 (tokens, D) tensors alive at the peak of a block (measured 24-26)
DECODE_PLANES_PER_CHANNEL = 4  # (T, H, W) planes per full-resolution channel alive at once
DECODE_PLANES = 6  # pixels out (3 float channels), their clamped copy and the uint8 frames
DEFAULT_DECODER_CHANNELS = 128  # full-resolution width when the decoder is not ours (SD-like VAEs)
OVERHEAD_BYTES = 64 * 2**20  # fixed cost of any request (measured 40-50 MB at small sizes)


def generation_bytes(token_counts: Sequence[int], dim: int, pixel_sizes: Sequence[Sequence[int]],
                     guided: bool, decoder_channels: int) -> int:
    """Bytes a generation adds at its peak: the larger of the DiT phase and the VAE decode.

    `token_counts`: DiT tokens per sample; `pixel_sizes`: (frames, height, width) per sample;
    `decoder_channels`: the VAE decoder's width at full resolution.
    """
    tokens = sum(token_counts) * (2 if guided else 1)
    dit = FLOAT_BYTES * tokens * dim * DIT_WIDTHS
    planes = DECODE_PLANES_PER_CHANNEL * decoder_channels + DECODE_PLANES
    # sizes decode one batch per size; the largest batch sets the peak
    per_size: dict[tuple[int, ...], int] = {}
    for size in pixel_sizes:
        frames, height, width = size
        per_size[tuple(size)] = per_size.get(tuple(size), 0) + frames * height * width
    decode = FLOAT_BYTES * planes * max(per_size.values(), default=0)
    return OVERHEAD_BYTES + max(dit, decode)


def decoder_channels(vae: torch.nn.Module) -> int:
    """Width of the VAE decoder at full resolution, from its config (ours), else a typical one."""
    config = getattr(vae, "config", None)
    if getattr(config, "kind", None) != "causal3d":
        return DEFAULT_DECODER_CHANNELS
    if config.patch_size > 1 or config.temporal_patch_size > 1:  # folded: a per-pixel head
        return max(config.pixel_channels, config.in_channels)
    return config.base_channels * config.channel_mult[0]


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new work on `device` now, or None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    return None


def check_fits(needed: int, device: torch.device, what: str) -> None:
    """A one-line UserError when `needed` bytes exceed what `device` has available now."""
    available = available_bytes(device)
    if available is None or needed <= available:
        return
    raise UserError(f"{what} needs about {needed / 2**30:.1f} GB of memory but "
                    f"{available / 2**30:.1f} GB is available on {device}; choose a smaller size "
                    f"or fewer frames (force=True / --force tries anyway)")
