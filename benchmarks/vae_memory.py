"""Peak memory and frames per second of CausalVAE encoding and decoding against clip length:
chunked (flat in clip length) versus one shot.

Each case runs in a fresh subprocess, so the peak resident set size (`ru_maxrss`) belongs to that
case alone. The reported number is the peak during the call minus the peak just before it (after
imports, building the model and allocating its input), so it counts activations, caches and the
output, not the interpreter or the weights. Numbers are CPU, fp32, batch 1, no grad.

    python benchmarks/vae_memory.py                       # default VAE, 64x64, 17 and 257 frames
    python benchmarks/vae_memory.py --size 128 --frames 17 65 257 --threads 2
    python benchmarks/vae_memory.py --model src/zoetrope/assets/shapes-demo/vae --encode
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


def run_case(frames: int, size: int, chunk_size: int | None, threads: int, op: str = "decode",
             model: str | None = None) -> dict:
    """Decode one latent (or encode one clip) in this process; its peak memory and time."""
    import torch

    from zoetrope.config import VAEConfig
    from zoetrope.vae import CausalVAE

    torch.set_num_threads(threads)
    if model:
        from zoetrope.vae_adapters import load_vae
        vae = load_vae(model).eval()
    else:
        vae = CausalVAE(VAEConfig()).eval()  # the default size: 4x8x8, base 64, (1, 2, 4, 4)
    if op == "decode":
        x = torch.randn(1, *vae.latent_shape(frames, size, size))  # (1, C, t, h, w)
    else:
        x = torch.rand(1, 3, frames, size, size) * 2 - 1
    before = _peak_mib()
    start = time.perf_counter()
    with torch.no_grad():
        out = (vae.decode(x, chunk_size=chunk_size) if op == "decode"  # (1, 3, T, H, W)
               else vae.encode(x, chunk_size=chunk_size).mean)
    seconds = time.perf_counter() - start
    video = out if op == "decode" else x
    return {"frames": frames, "size": size, "chunk_size": chunk_size, "op": op,
            "seconds": seconds, "fps": frames / seconds, "peak_mib": _peak_mib() - before,
            "video_mib": video.numel() * 4 / 2**20}


def main(argv: list[str] | None = None) -> None:
    """Run every (frames, mode) case in its own subprocess and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="height = width in pixels")
    parser.add_argument("--frames", type=int, nargs="+", default=[17, 257])
    parser.add_argument("--chunk-size", type=int, default=1, help="latent frames per chunk")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case")
    parser.add_argument("--model", help="a trained VAE directory (default: VAEConfig(), random)")
    parser.add_argument("--encode", action="store_true", help="also time and measure encoding")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)
    if args.case:
        frames, chunk, op = json.loads(args.case)
        print(json.dumps(run_case(frames, args.size, chunk, args.threads, op, args.model)))
        return
    print(f"{'CausalVAE(VAEConfig())' if not args.model else args.model}, {args.size}x{args.size},"
          f" fp32 CPU, {args.threads} thread(s); peak = ru_maxrss during the call - before")
    print(f"{'op':>7} {'frames':>7} {'mode':>10} {'peak MiB':>9} {'video MiB':>10} "
          f"{'seconds':>8} {'frames/s':>9}")
    for op in ["decode"] + (["encode"] if args.encode else []):
        for frames in args.frames:
            for chunk in (args.chunk_size, None):
                case = json.dumps([frames, chunk, op])
                command = [sys.executable, __file__, "--case", case, "--size", str(args.size),
                           "--threads", str(args.threads)]
                command += ["--model", args.model] if args.model else []
                out = subprocess.run(command, capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                mode = f"chunk {chunk}" if chunk else "one shot"
                print(f"{op:>7} {frames:>7} {mode:>10} {r['peak_mib']:>9.0f} "
                      f"{r['video_mib']:>10.1f} {r['seconds']:>8.1f} {r['fps']:>9.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
