"""Peak memory of CausalVAE decoding: chunked (flat in clip length) versus one shot.

Each case runs in a fresh subprocess, so the peak resident set size (`ru_maxrss`) belongs to that
case alone. The reported number is the peak during decoding minus the peak just before it (after
imports, building the model and allocating the latent), so it counts activations, caches and the
output video, not the interpreter or the weights. Numbers are CPU, fp32, batch 1, no grad.

    python benchmarks/vae_memory.py                       # default VAE, 64x64, 17 and 257 frames
    python benchmarks/vae_memory.py --size 128 --frames 17 65 257 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_case(frames: int, size: int, chunk_size: int | None, threads: int) -> dict:
    """Decode one latent in this process and return its peak memory and time."""
    import torch

    from zoetrope.config import VAEConfig
    from zoetrope.vae import CausalVAE

    torch.set_num_threads(threads)
    vae = CausalVAE(VAEConfig()).eval()  # the default size: 4x8x8, base 64, (1, 2, 4, 4)
    z = torch.randn(1, *vae.latent_shape(frames, size, size))  # (1, C, t, h, w)
    before = _peak_mib()
    start = time.perf_counter()
    with torch.no_grad():
        video = vae.decode(z, chunk_size=chunk_size)  # (1, 3, T, H, W)
    seconds = time.perf_counter() - start
    return {"frames": frames, "size": size, "chunk_size": chunk_size, "seconds": seconds,
            "peak_mib": _peak_mib() - before, "video_mib": video.numel() * 4 / 2**20}


def main(argv: list[str] | None = None) -> None:
    """Run every (frames, mode) case in its own subprocess and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="height = width in pixels")
    parser.add_argument("--frames", type=int, nargs="+", default=[17, 257])
    parser.add_argument("--chunk-size", type=int, default=1, help="latent frames per chunk")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)
    if args.case:
        frames, chunk = json.loads(args.case)
        print(json.dumps(run_case(frames, args.size, chunk, args.threads)))
        return
    print(f"CausalVAE(VAEConfig()) decode, {args.size}x{args.size}, fp32 CPU, "
          f"{args.threads} thread(s); peak = ru_maxrss during decode - before")
    print(f"{'frames':>7} {'mode':>10} {'peak MiB':>9} {'video MiB':>10} {'seconds':>8}")
    for frames in args.frames:
        for chunk in (args.chunk_size, None):
            case = json.dumps([frames, chunk])
            command = [sys.executable, __file__, "--case", case, "--size", str(args.size),
                       "--threads", str(args.threads)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            mode = f"chunk {chunk}" if chunk else "one shot"
            print(f"{frames:>7} {mode:>10} {r['peak_mib']:>9.0f} {r['video_mib']:>10.1f} "
                  f"{r['seconds']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
