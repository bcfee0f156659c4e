"""DiT training throughput and model FLOPs utilisation (MFU), fp32 versus bf16 autocast.

    python benchmarks/train_throughput.py                      # "base" preset, CPU, small mix
    python benchmarks/train_throughput.py --preset small --threads 2
    python benchmarks/train_throughput.py --device cuda --steps 20
    python benchmarks/train_throughput.py --preset shapes-demo --mix demo --threads 2 --sdpa-peer

What is timed: full training steps on one packed batch of mixed-size video latents (NaViT-style
`pack`): rectified-flow loss (`flow_loss`, logit-normal times, noise from a CPU generator), random
text tokens (B, 32, text_dim), backward, AdamW step, zero_grad. The same batch is reused every step.
`--warmup` steps are run and discarded (allocator, kernel selection, lazy init); the median of
`--steps` timed steps is reported. On CUDA the device is synchronised before and after each step.
"bf16" is `torch.autocast(dtype=torch.bfloat16)` over the loss with fp32 weights and optimizer,
as the trainer does; "fp32" is plain fp32 (with whatever matmul precision torch is set to, by
default no TF32; the peak below uses the same setting).

MFU (PaLM, Chowdhery et al., arXiv 2204.02311, appendix B) is

    MFU = achieved model FLOP/s / peak FLOP/s,
    achieved = 3 x forward FLOPs of the batch / seconds per step,

with forward FLOPs = 2 x multiply-adds of the matmuls, attention included (`dit.forward_flops`,
which counts them with FlopCounterMode on the meta device and halves them to multiply-adds; we
sum it per sample, which equals the packed count since attention is per sample). The 3x is the
usual convention: backward costs twice the forward. Elementwise work (norms, activations, the
optimizer) is not counted, so MFU is a lower bound on how busy the matmul units are. The peak is
not a datasheet number: it is measured in this run, in the same dtype, as the best of a few large
square matmuls, so MFU says how close training gets to what this machine's matmuls actually do.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter

import torch
from torch import Tensor

from zoetrope import attention
from zoetrope.config import ConfigError, DiTConfig, dit_preset
from zoetrope.diffusion import flow_loss, sample_time_logit_normal
from zoetrope.dit import DiT, count_params, forward_flops
from zoetrope.patches import Packed, pack

TEXT_LEN = 32  # text tokens per prompt (TextConfig.max_length's default)
# Latent grids (t, h, w) of one packed batch; channels come from the preset. "small" keeps a CPU
# run short (432 tokens at patch (1, 2, 2)); "large" is the mixed batch of a GPU run (864 tokens:
# 17 frames of 128x128, 9 frames of 128x192 and one 256x256 image through a 4x8x8 VAE).
MIXES: dict[str, list[tuple[int, int, int]]] = {
    "small": [(3, 16, 16), (1, 16, 24), (1, 24, 24)],
    "large": [(5, 16, 16), (3, 16, 24), (1, 32, 32)],
    # the bundled model's recipe: 17x64x64, 17x64x64, 17x48x80 and 64x64 images through 4x8x8
    "demo": [(5, 8, 8), (5, 8, 8), (5, 6, 10), (1, 8, 8)],
}
PRECISIONS = ("fp32", "bf16")


def sync(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock times cover the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, size: int, device: torch.device, trials: int = 5) -> float:
    """Best FLOP/s of (size x size) @ (size x size) in `dtype`, over `trials` timed runs."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    reps = 10 if device.type == "cuda" else 1  # one GPU matmul is too short to time alone
    a @ b  # warm-up: library init, kernel choice
    best = float("inf")
    for _ in range(trials):
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return 2 * size**3 / best  # n^3 multiply-adds, 2 FLOPs each


def make_batch(config: DiTConfig, grids: list[tuple[int, int, int]], device: torch.device,
               seed: int = 0) -> tuple[Packed, Tensor, Tensor, Tensor]:
    """Packed latents, per-token t (N,), noise (N, D_patch), text (B, L, text_dim); CPU-seeded."""
    g = torch.Generator().manual_seed(seed)
    latents = [torch.randn(config.in_channels, *grid, generator=g) for grid in grids]
    packed = pack(latents, config.patch_size)
    t = sample_time_logit_normal(packed.num_samples, g)[packed.sample_ids]  # one t per sample
    noise = torch.randn(packed.tokens.shape, generator=g)
    text = torch.randn(packed.num_samples, TEXT_LEN, config.text_dim, generator=g)
    return packed.to(device), t.to(device), noise.to(device), text.to(device)


def batch_macs(config: DiTConfig, grids: list[tuple[int, int, int]]) -> int:
    """Forward multiply-adds of the packed batch: the sum over its samples (one count per shape)."""
    counts = Counter(grids)
    return sum(k * forward_flops(config, (config.in_channels, *grid), TEXT_LEN)
               for grid, k in counts.items())


def time_steps(model: DiT, batch: tuple[Packed, Tensor, Tensor, Tensor], precision: str,
               warmup: int, steps: int, device: torch.device) -> float:
    """Median seconds of `steps` full training steps after `warmup` untimed ones."""
    packed, t, noise, text = batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def model_fn(x: Tensor, t_: Tensor) -> Tensor:
        return model(packed.with_tokens(x), t_, text)

    def step() -> None:
        with autocast:
            loss = flow_loss(model_fn, packed.tokens, t, noise, sample_ids=packed.sample_ids,
                             num_samples=packed.num_samples)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, measure matmul peaks and training steps per precision, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", help="DiT preset with text_dim > 0")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, help="timed steps (default: 3 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    # One CPU thread by default: on a 2-core machine shared with other jobs, two OpenMP threads
    # made a "base" step 2.8x (fp32) to 4x slower than one, spinning while waiting for a busy core.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--mix", choices=tuple(MIXES), help="latent grids of the batch "
                        "(default: small on CPU, large on CUDA)")
    parser.add_argument("--repeat", type=int, help="copies of the mix in the batch "
                        "(default: 1 on CPU, 8 on CUDA)")
    parser.add_argument("--matmul-size", type=int, help="peak matmul side "
                        "(default: 2048 on CPU, 8192 on CUDA)")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--sdpa-peer", action="store_true", help="also time each precision with "
                        "PyTorch SDPA for every attention (rows marked 'sdpa'), the peer of the "
                        "explicit-matmul path short low-precision CPU sequences take")
    args = parser.parse_args(argv)

    try:
        config = dit_preset(args.preset)
    except ConfigError as e:
        sys.exit(str(e))
    if not config.text_dim:
        sys.exit(f"preset {args.preset!r} has no text cross-attention; pick a text-to-video preset")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    for name in ("threads", "steps", "repeat", "matmul_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            sys.exit(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup < 0:
        sys.exit(f"--warmup must be >= 0, got {args.warmup}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    steps = args.steps or (20 if on_gpu else 3)
    mix = MIXES[args.mix or ("large" if on_gpu else "small")]
    repeat = args.repeat or (8 if on_gpu else 1)
    grids = mix * repeat
    size = args.matmul_size or (8192 if on_gpu else 2048)  # big enough to reach peak, quick on CPU

    torch.manual_seed(0)
    model = DiT(config).to(device).train()
    batch = make_batch(config, grids, device)
    tokens = batch[0].num_tokens
    train_flops = 3 * 2 * batch_macs(config, grids)  # 3x forward; 2 FLOPs per multiply-add
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    threads = torch.get_num_threads()
    where = torch.cuda.get_device_name(device) if on_gpu else f"CPU, {threads} thread(s)"
    print(f"DiT {args.preset!r} ({count_params(model) / 1e6:.1f}M params) on {where}; "
          f"{train_flops / 1e9:.1f} GFLOP/step (3 x forward)")
    print(f"batch: {repeat} x latent grids (t, h, w) {mix} with C={config.in_channels}, "
          f"text {TEXT_LEN} tokens; median of {steps} steps after {args.warmup} warm-up; "
          f"peak: best {size}x{size} matmul")
    header = ("precision", "tokens/step", "s/step", "tokens/s", "achieved TFLOP/s",
              "peak TFLOP/s", "MFU %")
    print(f"{header[0]:>9} {header[1]:>11} {header[2]:>8} {header[3]:>9} {header[4]:>16} "
          f"{header[5]:>12} {header[6]:>6}")
    short_keys = attention.CPU_MATMUL_MAX_KEYS
    for precision in args.precision:
        peak = matmul_peak(dtypes[precision], size, device)
        for peer in ([False, True] if args.sdpa_peer else [False]):
            attention.CPU_MATMUL_MAX_KEYS = 0 if peer else short_keys
            seconds = time_steps(model, batch, precision, args.warmup, steps, device)
            achieved = train_flops / seconds
            label = precision + (" sdpa" if peer else "")
            print(f"{label:>9} {tokens:>11} {seconds:>8.3f} {tokens / seconds:>9.1f} "
                  f"{achieved / 1e12:>16.4f} {peak / 1e12:>12.4f} {100 * achieved / peak:>6.1f}")
    attention.CPU_MATMUL_MAX_KEYS = short_keys


if __name__ == "__main__":
    main()
