"""Peak memory and time of `generate` against clip length: long clips go window after window.

Each length runs in a fresh subprocess, so the peak resident set size (`ru_maxrss`) belongs to
that length alone. "gen MiB" is the peak during generation minus the peak just before it (after
imports and loading the pipeline): activations, the windows' latents and the output video, not the
interpreter or the weights. "process MiB" is the whole process's peak. Ratios are to the first
length given. CPU, the pipeline's own precision and sampling, batch 1.

    python benchmarks/long_clip_memory.py                    # bundled model, 17 33 65 129 257
    python benchmarks/long_clip_memory.py --model DIR --frames 33 257 --threads 2
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


def run_case(frames: int, model: str | None, threads: int) -> dict:
    """Generate one clip of `frames` frames in this process; its peak memory and time."""
    import torch

    from zoetrope.pipeline import BUNDLED_MODEL, TextToVideoPipeline

    torch.set_num_threads(threads)
    pipe = TextToVideoPipeline.from_pretrained(model or BUNDLED_MODEL)
    before = _peak_mib()
    start = time.perf_counter()
    out = pipe("a red circle moving right", num_frames=frames, seed=0, progress=False)
    seconds = time.perf_counter() - start
    return {"frames": frames, "seconds": seconds, "gen_mib": _peak_mib() - before,
            "process_mib": _peak_mib(), "shape": list(out.frames.shape)}



def main(argv: list[str] | None = None) -> None:
    """Run every length in its own subprocess; print a table and, with --json, write one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="pipeline directory (default: the bundled model)")
    parser.add_argument("--frames", type=int, nargs="+", default=[17, 33, 65, 129, 257])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)  # internal: one length
    args = parser.parse_args(argv)
    from zoetrope.hardware import cpu_name

    if args.case:
        print(json.dumps(run_case(args.case, args.model, args.threads)))
        return
    print(f"generate, batch 1, {args.threads} thread(s), {cpu_name()}; gen = ru_maxrss during "
          "generation - before")
    print(f"{'frames':>7} {'gen MiB':>8} {'x first':>8} {'process MiB':>12} {'x first':>8} "
          f"{'seconds':>8}")
    rows = []
    for frames in args.frames:
        command = [sys.executable, __file__, "--case", str(frames), "--threads", str(args.threads)]
        command += ["--model", args.model] if args.model else []
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{frames} frames failed: {out.stderr.strip().splitlines()[-1]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        first = rows[0]
        print(f"{frames:>7} {r['gen_mib']:>8.0f} {r['gen_mib'] / first['gen_mib']:>8.2f} "
              f"{r['process_mib']:>12.0f} {r['process_mib'] / first['process_mib']:>8.2f} "
              f"{r['seconds']:>8.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
