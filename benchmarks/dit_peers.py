"""zoetrope's DiT training step against peer implementations at equal dims, round-robin in one process.

    python benchmarks/dit_peers.py --official-dit /tmp/dit_official/models.py
    python benchmarks/dit_peers.py --rows DiT-B/2 --steps 3 --warmup 1 --json peers.json
    python benchmarks/dit_peers.py --device cuda --steps 20 --warmup 5

Rows (each one model size and input, run by every contender that can be loaded):

  DiT-S/2, DiT-B/2  the paper's class-conditional image models, 256x256 images = 32x32x4 latents,
                    patch 2 -> 256 tokens, `--image-batch` (8) images. Contenders: zoetrope's
                    `DiT` at the preset (fed a `Packed` batch built once, as the trainer does),
                    the official DiT (facebookresearch/DiT `models.py`, loaded from the path given
                    by `--official-dit`; it needs `timm`), and diffusers' `DiTTransformer2DModel`
                    with the same depth, width, heads, patch and learned-sigma output (8 channels).
  video             zoetrope's "base" text-to-video preset (768 wide, 12 blocks, 12 heads, text
                    cross-attention, QK-norm, 3D RoPE) on latents (16, 5, 32, 32) at patch 1x2x2
                    -> 1,280 tokens, `--video-batch` (1) clips, 32 text tokens of width 768.
                    Contenders: diffusers' `WanTransformer3DModel` (the same block layout: RoPE
                    self-attention with QK-norm, text cross-attention, 4x FFN) and
                    `CogVideoXTransformer3DModel` (joint attention over text and video tokens)
                    of the same width, depth, heads, patch and channels.

Peers are optional: each one that cannot be loaded is named with the reason on one line, and the
run goes on without it.

What is timed: a full training step, the same for every contender: forward on a fixed batch,
loss = MSE of the output against a fixed random target of the output's shape, backward, AdamW
step, zero_grad. The target is not a diffusion objective: the objective's elementwise work is
negligible and differs between libraries only in bookkeeping, so a plain MSE keeps the comparison
about the networks. Round-robin: each round runs one step of every contender of the row (the
order rotates each round), `--warmup` rounds are discarded, the median of `--steps` timed rounds
is reported. Load from other processes then falls on all contenders alike, so the ratios are fair
even on a busy machine; the absolute seconds are not. On CUDA the device is synchronised around
each step.

Precisions: "fp32", and "bf16" (`torch.autocast` with fp32 weights and optimizer, as zoetrope's
trainer does) where the hardware computes bf16 natively (`zoetrope.hardware.choose_precision`:
CUDA with bf16, CPUs with avx512_bf16/amx_bf16); `--precision` forces a choice.

MFU = 3 x forward FLOPs / seconds per step / peak, as in train_throughput.py (PaLM, arXiv
2204.02311, appendix B). Forward FLOPs are counted per model: each contender is built on the meta
device and run once under FlopCounterMode (matmuls, attention included), so a peer that does more
work (CogVideoX attends over text tokens too) is credited for it. The peak is the best large
square matmul measured in this run, in the same dtype (`train_throughput.matmul_peak`), at the
start and once per round, the best over the whole run: on a shared machine a single measurement
can fall in a busy moment and flatter every MFU after it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train_throughput import matmul_peak, sync  # a sibling script: run as benchmarks/dit_peers.py
from zoetrope.config import DiTConfig, dit_preset
from zoetrope.dit import DiT, count_params
from zoetrope.hardware import choose_precision
from zoetrope.patches import pack

ROWS = ("DiT-S/2", "DiT-B/2", "video")
VIDEO_PRESET = "base"
VIDEO_LATENT = (16, 5, 32, 32)  # (C, t, h, w): 17 frames of 256x256 through a 4x8x8 VAE
IMAGE_LATENT = (4, 32, 32)  # (C, h, w): a 256x256 image through SD's 8x VAE
TEXT_LEN = 32  # text tokens per prompt
PEERS = ("official-DiT", "diffusers-DiT", "diffusers-Wan", "diffusers-CogVideoX")


@dataclass
class Contender:
    """One model of a row: how to build it and run its forward on fixed inputs."""

    name: str
    build: Callable[[], nn.Module]  # under a device context: real or meta
    inputs: Callable[[torch.device], dict]  # keyword arguments of `run`, made on the device
    run: Callable[..., Tensor]  # (model, **inputs) -> output tensor
    model: nn.Module | None = None
    batch: dict = field(default_factory=dict)
    target: Tensor | None = None
    optimizer: torch.optim.Optimizer | None = None
    flops: int | None = None  # forward FLOPs (2 per multiply-add) of the batch
    times: list[float] = field(default_factory=list)


# ---- contenders ------------------------------------------------------------------------------


def zoetrope_image(config: DiTConfig, batch: int) -> Contender:
    """zoetrope's DiT on `batch` class-labelled 32x32x4 latents, packed once outside the step."""

    def inputs(device: torch.device) -> dict:
        g = torch.Generator().manual_seed(0)
        latents = [torch.randn(IMAGE_LATENT[0], 1, *IMAGE_LATENT[1:], generator=g) for _ in range(batch)]
        packed = pack(latents, config.patch_size).to(device)
        t = torch.rand(batch, generator=g).to(device)  # one t in [0, 1] per sample
        labels = torch.randint(0, 1000, (batch,), generator=g).to(device)
        return {"packed": packed, "t": t, "labels": labels}

    return Contender("zoetrope", lambda: DiT(config), inputs,
                     lambda m, packed, t, labels: m(packed, t, labels=labels))


def zoetrope_video(config: DiTConfig, batch: int) -> Contender:
    """zoetrope's text-to-video DiT on `batch` clips of VIDEO_LATENT with TEXT_LEN text tokens."""

    def inputs(device: torch.device) -> dict:
        g = torch.Generator().manual_seed(0)
        packed = pack([torch.randn(VIDEO_LATENT, generator=g) for _ in range(batch)],
                      config.patch_size).to(device)
        t = torch.rand(batch, generator=g).to(device)
        text = torch.randn(batch, TEXT_LEN, config.text_dim, generator=g).to(device)
        # all text tokens real; none on meta, where the model's mask check (.item) cannot run
        mask = None if device.type == "meta" else torch.ones(batch, TEXT_LEN, dtype=torch.bool,
                                                             device=device)
        return {"packed": packed, "t": t, "text": text, "mask": mask}

    return Contender("zoetrope", lambda: DiT(config), inputs,
                     lambda m, packed, t, text, mask: m(packed, t, text, mask))


def image_inputs(batch: int, long_t: bool) -> Callable[[torch.device], dict]:
    """(B, 4, 32, 32) latents, integer DDPM steps (as float unless long_t) and class labels."""

    def inputs(device: torch.device) -> dict:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *IMAGE_LATENT, generator=g).to(device)
        t = torch.randint(0, 1000, (batch,), generator=g)
        y = torch.randint(0, 1000, (batch,), generator=g).to(device)
        return {"x": x, "t": (t if long_t else t.float()).to(device), "y": y}

    return inputs


def official_dit(path: Path | None, config: DiTConfig, name: str, batch: int) -> Contender:
    """facebookresearch/DiT's `DiT_models[name]`, imported from the models.py at `path`."""
    if path is None:
        raise RuntimeError("no --official-dit PATH/TO/models.py given")
    spec = importlib.util.spec_from_file_location("official_dit_models", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # imports timm, which imports torchvision
    except FileNotFoundError:
        raise RuntimeError(f"{path} does not exist") from None
    except ImportError as e:  # timm itself, or torchvision, which timm imports on import
        raise RuntimeError(f"{path} needs timm, and importing it failed: {e}") from None
    builder = module.DiT_models[name]  # input_size is the latent side
    return Contender("official-DiT",
                     lambda: builder(input_size=IMAGE_LATENT[1], num_classes=1000, learn_sigma=True),
                     image_inputs(batch, long_t=False), lambda m, x, t, y: m(x, t, y))


def diffusers_dit(config: DiTConfig, batch: int) -> Contender:
    """diffusers' DiTTransformer2DModel with zoetrope's depth, width, heads, patch and channels."""
    from diffusers import DiTTransformer2DModel

    def build() -> nn.Module:
        return DiTTransformer2DModel(
            num_attention_heads=config.num_heads, attention_head_dim=config.dim // config.num_heads,
            in_channels=config.in_channels, out_channels=config.out_channels, num_layers=config.depth,
            sample_size=IMAGE_LATENT[1], patch_size=config.patch_size[1])

    return Contender("diffusers-DiT", build, image_inputs(batch, long_t=True),
                     lambda m, x, t, y: m(x, timestep=t, class_labels=y).sample)


def video_inputs(config: DiTConfig, batch: int, frames_first: bool) -> Callable[[torch.device], dict]:
    """(B, C, t, h, w) latents ((B, t, C, h, w) if frames_first), DDPM steps, text tokens."""

    def inputs(device: torch.device) -> dict:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *VIDEO_LATENT, generator=g)
        x = x.transpose(1, 2).contiguous() if frames_first else x
        t = torch.randint(0, 1000, (batch,), generator=g).to(device)
        text = torch.randn(batch, TEXT_LEN, config.text_dim, generator=g).to(device)
        return {"x": x.to(device), "t": t, "text": text}

    return inputs


def diffusers_wan(config: DiTConfig, batch: int) -> Contender:
    """diffusers' WanTransformer3DModel at zoetrope's width, depth, heads, patch and MLP ratio."""
    from diffusers import WanTransformer3DModel

    def build() -> nn.Module:
        return WanTransformer3DModel(
            patch_size=config.patch_size, num_attention_heads=config.num_heads,
            attention_head_dim=config.dim // config.num_heads, in_channels=config.in_channels,
            out_channels=config.out_channels, text_dim=config.text_dim,
            ffn_dim=int(config.dim * config.mlp_ratio), num_layers=config.depth)

    return Contender("diffusers-Wan", build, video_inputs(config, batch, frames_first=False),
                     lambda m, x, t, text: m(x, t, text).sample)


def diffusers_cogvideox(config: DiTConfig, batch: int) -> Contender:
    """diffusers' CogVideoXTransformer3DModel (2B layout: sin-cos positions) at zoetrope's dims."""
    from diffusers import CogVideoXTransformer3DModel

    _, t, h, w = VIDEO_LATENT

    def build() -> nn.Module:
        return CogVideoXTransformer3DModel(
            num_attention_heads=config.num_heads, attention_head_dim=config.dim // config.num_heads,
            in_channels=config.in_channels, out_channels=config.out_channels,
            text_embed_dim=config.text_dim, num_layers=config.depth, sample_width=w,
            sample_height=h, sample_frames=(t - 1) * 4 + 1, patch_size=config.patch_size[1],
            max_text_seq_length=TEXT_LEN)

    return Contender("diffusers-CogVideoX", build, video_inputs(config, batch, frames_first=True),
                     lambda m, x, t, text: m(x, text, t).sample)


def row_contenders(row: str, args: argparse.Namespace) -> tuple[DiTConfig, str, list[Contender]]:
    """zoetrope and every loadable peer of `row`; prints one line per peer that cannot load."""
    if row == "video":
        config = dit_preset(VIDEO_PRESET)
        shape = f"{args.video_batch} x latent {VIDEO_LATENT}, text {TEXT_LEN}x{config.text_dim}"
        makers = {"diffusers-Wan": lambda: diffusers_wan(config, args.video_batch),
                  "diffusers-CogVideoX": lambda: diffusers_cogvideox(config, args.video_batch)}
        contenders = [zoetrope_video(config, args.video_batch)]
    else:
        config = dit_preset(row)
        shape = f"{args.image_batch} x latent {IMAGE_LATENT}, class labels"
        makers = {"official-DiT": lambda: official_dit(args.official_dit, config, row, args.image_batch),
                  "diffusers-DiT": lambda: diffusers_dit(config, args.image_batch)}
        contenders = [zoetrope_image(config, args.image_batch)]
    for name, make in makers.items():
        if name not in args.peers:
            continue
        try:
            contenders.append(make())
        except Exception as e:  # a missing package, a file that won't import: skip this peer
            print(f"  {name}: could not load ({type(e).__name__}: {e})")
    return config, shape, contenders


# ---- measuring -------------------------------------------------------------------------------


def count_forward_flops(c: Contender) -> int | None:
    """FLOPs of one forward of `c` on its batch, counted on the meta device; None if it fails."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"):
            model = c.build()
            batch = c.inputs(torch.device("meta"))
            counter = FlopCounterMode(display=False)
            with counter:
                c.run(model, **batch)
        return counter.get_total_flops()
    except Exception as e:
        print(f"  {c.name}: FLOPs not counted on the meta device ({type(e).__name__}: {e})")
        return None


def prepare(c: Contender, device: torch.device) -> None:
    """Build the model, batch, fixed target (CPU-seeded) and optimizer of `c` on `device`."""
    torch.manual_seed(0)
    c.model = c.build().to(device).train()
    c.batch = c.inputs(device)
    with torch.no_grad():
        shape = c.run(c.model, **c.batch).shape
    c.target = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)
    c.optimizer = torch.optim.AdamW(c.model.parameters(), lr=1e-4)


def train_step(c: Contender, autocast: bool, device: torch.device) -> float:
    """Seconds of one step: forward, MSE to the fixed target, backward, AdamW, zero_grad."""
    sync(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = F.mse_loss(c.run(c.model, **c.batch).float(), c.target)
    loss.backward()
    c.optimizer.step()
    c.optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def round_robin(contenders: list[Contender], autocast: bool, warmup: int, steps: int,
                device: torch.device, peak: Callable[[], float]) -> float:
    """warmup + steps rounds of one step per contender, order rotated each round; keep timed.

    `peak()` is measured once per round too, so it sees the same load as the steps; the best of
    the rounds is returned.
    """
    for c in contenders:
        c.times = []
    best = 0.0
    for i in range(warmup + steps):
        shift = i % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            seconds = train_step(c, autocast, device)
            if i >= warmup:
                c.times.append(seconds)
        best = max(best, peak())
    return best


def print_table(results: list[dict], peaks: dict[str, float]) -> None:
    """One line per row, precision and contender; adds achieved FLOP/s and MFU to `results`."""
    print(f"{'row':>8} {'precision':>9} {'contender':>20} {'s/step':>8} {'peer/zoetrope':>13} "
          f"{'TFLOP/s':>8} {'MFU %':>6}")
    for r in results:  # MFU against the final peaks, so every row is judged by the same one
        peak = peaks[r["precision"]]
        achieved = 3 * r["forward_flops"] / r["seconds_per_step"] if r["forward_flops"] else None
        r.update(achieved_flops_per_s=achieved, peak_flops_per_s=peak,
                 mfu=achieved / peak if achieved else None)
        rate = f"{achieved / 1e12:>8.4f} {100 * r['mfu']:>6.1f}" if achieved else f"{'n/a':>8} {'n/a':>6}"
        print(f"{r['row']:>8} {r['precision']:>9} {r['contender']:>20} {r['seconds_per_step']:>8.3f} "
              f"{r['ratio_to_zoetrope']:>13.2f} {rate}")


# ---- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, then per row and precision time every contender round-robin."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-dit", type=Path, metavar="MODELS_PY",
                        help="facebookresearch/DiT's models.py (needs timm); without it that "
                             "peer is skipped")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"),
                        help="default: fp32, plus bf16 where the hardware has native bf16")
    parser.add_argument("--steps", type=int, help="timed rounds (default: 3 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default: 1 on CPU, "
                        "5 on CUDA)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, "
                        "as train_throughput.py, for a 2-core machine shared with other jobs)")
    parser.add_argument("--image-batch", type=int, default=8, help="images per step (default 8)")
    parser.add_argument("--video-batch", type=int, help="clips per step (default: 1 on CPU, "
                        "8 on CUDA)")
    parser.add_argument("--matmul-size", type=int, help="peak matmul side "
                        "(default: 2048 on CPU, 8192 on CUDA)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    for name in ("threads", "steps", "image_batch", "video_batch", "matmul_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            sys.exit(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup is not None and args.warmup < 0:
        sys.exit(f"--warmup must be >= 0, got {args.warmup}")
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    torch.set_num_threads(args.threads)
    steps = args.steps or (20 if on_gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    args.video_batch = args.video_batch or (8 if on_gpu else 1)
    size = args.matmul_size or (8192 if on_gpu else 2048)
    native = choose_precision("auto", device)
    precisions = args.precision or (["fp32", "bf16"] if native.autocast else ["fp32"])
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    where = torch.cuda.get_device_name(device) if on_gpu else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"torch {torch.__version__} on {where}; {native.describe()}")
    print(f"round-robin: median of {steps} rounds after {warmup} warm-up; MFU = 3 x forward FLOPs "
          f"(counted per model) / s / peak, the peak being the best {size}x{size} matmul in the "
          f"same dtype, measured at the start and once per round, over the whole run")
    peaks = {p: matmul_peak(dtypes[p], size, device) for p in precisions}

    results = []
    for row in args.rows:
        print(f"\n{row}:")
        _, shape, contenders = row_contenders(row, args)
        for c in contenders:
            c.flops = count_forward_flops(c)
            prepare(c, device)
        print(f"  {shape}; " + ", ".join(
            f"{c.name} {count_params(c.model) / 1e6:.1f}M params"
            + (f" {c.flops / 1e9:.1f} GFLOP fwd" if c.flops else "") for c in contenders))
        for precision in precisions:
            found = round_robin(contenders, precision == "bf16", warmup, steps, device,
                                lambda: matmul_peak(dtypes[precision], size, device, trials=1))
            peaks[precision] = max(peaks[precision], found)
            ours = statistics.median(contenders[0].times)
            for c in contenders:
                seconds = statistics.median(c.times)
                results.append({"row": row, "input": shape, "precision": precision,
                                "contender": c.name, "params": count_params(c.model),
                                "forward_flops": c.flops, "seconds_per_step": seconds,
                                "step_times": c.times, "ratio_to_zoetrope": seconds / ours})
            print(f"  {precision}: " + ", ".join(f"{c.name} {statistics.median(c.times):.3f} s"
                                                 for c in contenders))
        for c in contenders:  # free this row's models before the next
            c.model = c.optimizer = c.batch = c.target = None

    print("\nmatmul peak (best over the run): "
          + ", ".join(f"{p} {peaks[p] / 1e12:.3f} TFLOP/s" for p in precisions))
    print_table(results, peaks)

    if args.json:
        args.json.write_text(json.dumps({
            "torch": torch.__version__, "device": where, "precision_reason": native.reason,
            "steps": steps, "warmup": warmup, "matmul_size": size,
            "peaks_flops_per_s": peaks, "results": results}, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
