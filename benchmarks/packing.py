"""Packing mixed-size clips: the share of DiT work spent on real tokens, and real tokens per second.

A stream of clips of many sizes and durations (the shapes world at several sizes, and the real
clips in ../shared/data/videos at their native aspect, about 128 px on the short side) becomes
latent grids (4x8x8 VAE) and DiT tokens (patch 1x2x2). Batches of `--batch` clips are made
three ways:

  packed   NaViT (Dehghani et al., arXiv 2307.06304): the clips' tokens concatenated, attention
           within each clip; zoetrope's DiT. Its share is MEASURED: FlopCounterMode on the real
           forward of each packed batch against the sum of each clip's own forward alone.
  padded   every clip padded to the longest in its batch (the usual dense batch).
  buckets  clips sorted into token-count buckets (powers of two), batches from one bucket, each
           clip padded to the bucket's size (aspect-ratio bucketing without resizing).

For padded and buckets the share is counted: real tokens over tokens computed (MLP and
projections), and real query-key pairs over pairs computed (attention). Real tokens per second
are timed training steps (forward, backward, AdamW) of the same DiT on each scheme's batches,
round-robin in one process, padding emulated by clips of the padded token count.

    python benchmarks/packing.py                         # shapes-demo DiT, CPU, 1 thread
    python benchmarks/packing.py --preset small --batch 8 --rounds 3 --json packing.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from zoetrope.config import dit_preset
from zoetrope.diffusion import flow_loss
from zoetrope.dit import DiT, forward_flops
from zoetrope.hardware import cpu_name
from zoetrope.patches import pack

VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos"
SHAPES_SIZES = [(17, 64, 64), (17, 48, 80), (1, 64, 64), (33, 64, 64), (9, 64, 112),
                (1, 128, 128), (5, 96, 96)]
TEXT_LEN = 32


def latent_grid(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(t, h, w) of a clip through the 4x8x8 causal VAE: 1 + (T - 1) / 4 frames, 8x smaller."""
    return (1 + (frames - 1) // 4, height // 8, width // 8)


def real_clip_sizes(short: int = 128, max_frames: int = 33) -> list[tuple[int, int, int]]:
    """(frames, height, width) of each shared clip: native aspect, `short` px on the short side
    (multiples of 16: the VAE's 8 and the patch's 2), up to `max_frames` frames (1 + 4k)."""
    from zoetrope.data.video import probe_video

    sizes = []
    for path in sorted(VIDEOS.glob("*")):
        if path.suffix not in (".mp4", ".avi", ".gif"):
            continue
        info = probe_video(path)
        scale = short / min(info["height"], info["width"])
        h, w = (max(16, round(info[k] * scale / 16) * 16) for k in ("height", "width"))
        frames = min(max_frames, info["frames"] or max_frames)
        sizes.append((1 + (frames - 1) // 4 * 4, h, w))
    return sizes


def stream(count: int, with_real: bool) -> list[tuple[int, int, int]]:
    """`count` latent grids: shapes sizes and (if present) the real clips, interleaved."""
    sizes = SHAPES_SIZES + (real_clip_sizes() if with_real else [])
    return [latent_grid(*sizes[(i * 5) % len(sizes)]) for i in range(count)]


def tokens(grid: tuple[int, int, int]) -> int:
    t, h, w = grid
    return t * (h // 2) * (w // 2)


def bucket(n: int) -> int:
    return 1 << math.ceil(math.log2(max(n, 1)))


def schemes(grids: list[tuple[int, int, int]], batch: int) -> dict[str, list[list[int]]]:
    """Token counts computed per clip, batch by batch, for padded and buckets."""
    padded = []
    for i in range(0, len(grids), batch):
        sizes = [tokens(g) for g in grids[i:i + batch]]
        padded.append([max(sizes)] * len(sizes))
    by_bucket: dict[int, list[int]] = {}
    for g in grids:
        by_bucket.setdefault(bucket(tokens(g)), []).append(tokens(g))
    buckets = []
    for size, members in sorted(by_bucket.items()):
        for i in range(0, len(members), batch):
            buckets.append([size] * len(members[i:i + batch]))
    return {"padded": padded, "buckets": buckets}


def measured_packed_share(config, grids: list[tuple[int, int, int]], batch: int) -> float:
    """Sum of each clip's own forward FLOPs over FlopCounterMode's count of the packed forwards."""
    alone = sum(forward_flops(config, (config.in_channels, *g), TEXT_LEN) for g in grids)
    packed_total = 0
    with torch.device("meta"):
        model = DiT(config)
        for i in range(0, len(grids), batch):
            part = grids[i:i + batch]
            packed = pack([torch.zeros(config.in_channels, *g) for g in part], config.patch_size)
            counter = FlopCounterMode(display=False)
            with counter:
                model(packed, torch.zeros(len(part)), torch.zeros(len(part), TEXT_LEN,
                                                                   config.text_dim))
            packed_total += counter.get_total_flops() // 2
    return alone / packed_total


def step_seconds(model: DiT, optimizer, grids: list[tuple[int, int, int]], seed: int) -> float:
    """One timed training step on the packed grids."""
    g = torch.Generator().manual_seed(seed)
    c = model.config.in_channels
    packed = pack([torch.randn(c, *grid, generator=g) for grid in grids], model.config.patch_size)
    t = torch.rand(packed.num_samples, generator=g)[packed.sample_ids]
    noise = torch.randn(packed.tokens.shape, generator=g)
    text = torch.randn(packed.num_samples, TEXT_LEN, model.config.text_dim, generator=g)
    start = time.perf_counter()
    loss = flow_loss(lambda x, t_: model(packed.with_tokens(x), t_, text), packed.tokens, t,
                     noise, sample_ids=packed.sample_ids, num_samples=packed.num_samples)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def flat(n: int) -> tuple[int, int, int]:
    """A latent grid of exactly n tokens (patch 1x2x2): what a clip padded to n tokens costs."""
    return (1, 2, 2 * n)



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes-demo")
    parser.add_argument("--clips", type=int, default=64, help="clips in the stream")
    parser.add_argument("--batch", type=int, default=8, help="clips per batch")
    parser.add_argument("--rounds", type=int, default=2, help="timed passes over the stream")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = dit_preset(args.preset)
    with_real = VIDEOS.is_dir()
    grids = stream(args.clips, with_real)
    real = [tokens(g) for g in grids]
    plans = schemes(grids, args.batch)
    rows = {"packed": {"token_share": measured_packed_share(config, grids, args.batch)}}
    rows["packed"]["pair_share"] = rows["packed"]["token_share"]  # measured over all FLOPs
    for name, batches in plans.items():
        computed = [n for b in batches for n in b]
        rows[name] = {"token_share": sum(real) / sum(computed),
                      "pair_share": sum(n * n for n in real) / sum(n * n for n in computed)}
    batches = {"packed": [grids[i:i + args.batch] for i in range(0, len(grids), args.batch)]}
    for name, plan in plans.items():
        batches[name] = [[flat(n) for n in b] for b in plan]
    torch.manual_seed(0)
    model = DiT(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_seconds(model, optimizer, batches["packed"][0], 0)  # warm-up
    seconds = {name: [] for name in batches}
    for r in range(args.rounds):  # round-robin: every scheme in each round
        for name, bs in batches.items():
            seconds[name].append(sum(step_seconds(model, optimizer, b, r) for b in bs))
    for name in rows:
        rows[name]["seconds"] = statistics.median(seconds[name])
        rows[name]["real_tokens_per_s"] = sum(real) / rows[name]["seconds"]
    print(f"DiT {args.preset!r}, {cpu_name()}, {torch.get_num_threads()} thread(s); "
          f"{len(grids)} clips ({'shapes and shared real clips' if with_real else 'shapes only'}"
          f"), {sum(real)} real tokens, batches of {args.batch}")
    print(f"{'scheme':>8} {'tokens real %':>14} {'attn pairs real %':>18} {'s/pass':>8} "
          f"{'real tok/s':>11} {'x packed':>9}")
    for name, r in rows.items():
        print(f"{name:>8} {100 * r['token_share']:>14.1f} {100 * r['pair_share']:>18.1f} "
              f"{r['seconds']:>8.2f} {r['real_tokens_per_s']:>11.0f} "
              f"{r['real_tokens_per_s'] / rows['packed']['real_tokens_per_s']:>9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "preset": args.preset,
                                               "clips": len(grids), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
