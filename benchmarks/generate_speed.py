"""End-to-end generation time and its split: text encoding, DiT denoising, VAE decode.

    python benchmarks/generate_speed.py                  # bundled model, its default settings
    python benchmarks/generate_speed.py --model RUN_DIR/final
    python benchmarks/generate_speed.py --random-tiny    # tiny random pipeline, no weights needed
    python benchmarks/generate_speed.py --random-preset shapes-demo  # random weights, real sizes

One warm-up call, then the median of `--runs` calls. Phase times come from `VideoOutput.timings`,
which the pipeline measures itself (synchronising CUDA), so nothing here re-implements generation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

from zoetrope.config import DiffusionConfig, DiTConfig, TextConfig, VAEConfig, dit_preset
from zoetrope.diffusion import model_calls, sampling_grid
from zoetrope.pipeline import BUNDLED_MODEL, TextToVideoPipeline

PHASES = ("text", "denoise", "decode", "total")


def random_pipeline(tiny: bool, preset: str = "shapes-demo") -> TextToVideoPipeline:
    """Random weights: a tiny pipeline (32x32 frames) or a DiT preset with default VAE and text."""
    if tiny:
        vae = VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1),
                        spatial_downsample=4)
        dit = DiTConfig(in_channels=4, dim=32, depth=1, num_heads=2, text_dim=16)
        text = TextConfig(dim=16, depth=1, num_heads=2, max_length=16)
        size = (17, 32, 32)
    else:
        dit = dit_preset(preset)
        vae, text = VAEConfig(latent_channels=dit.in_channels), TextConfig(dim=dit.text_dim)
        size = (17, 64, 64)
    return TextToVideoPipeline.from_configs(vae, dit, text, DiffusionConfig(), default_size=size)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, time generation, print medians per phase."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="pipeline directory (default: the bundled model)")
    source.add_argument("--random-tiny", action="store_true", help="tiny random pipeline")
    source.add_argument("--random-preset", help="random pipeline around a DiT preset, "
                        "e.g. shapes-demo")
    parser.add_argument("--runs", type=int, default=5, help="timed runs (median reported)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the pipeline's)")
    parser.add_argument("--restarts", type=int, help="restart rounds (default: the pipeline's)")
    parser.add_argument("--batch", type=int, default=1, help="prompts per call")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    if args.random_tiny or args.random_preset:
        pipe = random_pipeline(args.random_tiny, args.random_preset or "")
        name = "random tiny" if args.random_tiny else f"random {args.random_preset}"
    else:
        directory = Path(args.model) if args.model else BUNDLED_MODEL
        if not (directory / "pipeline.json").is_file():
            sys.exit(f"no pipeline directory at {directory}; pass --model DIR or --random-tiny")
        pipe, name = TextToVideoPipeline.from_pretrained(directory), str(directory)
    pipe.to(args.device)
    steps = args.steps or pipe.diffusion.num_inference_steps
    d = pipe.diffusion
    restarts = d.restarts if args.restarts is None else args.restarts
    # DiT evaluations: the grid's steps that go down (restart rounds included, their jumps not)
    calls = model_calls(sampling_grid(replace(d, restarts=restarts), steps))
    prompts = ["a red circle moving right"] * args.batch

    def once() -> dict[str, float]:
        return pipe(prompts, num_inference_steps=steps, seed=0, progress=False,
                    restarts=restarts).timings

    once()  # warm-up: allocator, kernels, lazy init
    runs = [once() for _ in range(args.runs)]
    median = {p: statistics.median(r[p] for r in runs) for p in PHASES}
    frames, height, width = pipe.default_size
    scale = d.guidance_scale
    rounds = f" + {restarts} restarts x {d.restart_steps} steps from t = {d.restart_time:g}" \
        if restarts else ""
    print(f"{name} on {args.device}: {args.batch} x {frames} frames {height}x{width}, {steps} "
          f"{d.sampler} steps{rounds}, guidance {scale:g}, median of {args.runs} runs "
          f"(torch threads {torch.get_num_threads()})")
    print(f"  end to end     {median['total'] * 1e3:9.1f} ms")
    labels = {"text": "text encoding", "denoise": "DiT denoising", "decode": "VAE decode"}
    for phase, label in labels.items():
        share = 100 * median[phase] / median["total"]
        print(f"  {label:14} {median[phase] * 1e3:9.1f} ms  {share:5.1f}%")
    lo, hi = d.guidance_interval
    how = ("conditional only" if scale == 1 else "cond+uncond batched" if (lo, hi) == (0, 1) else
           f"mean: cond+uncond batched at t in [{lo:g}, {hi:g}], conditional only elsewhere")
    print(f"  per DiT step   {median['denoise'] / calls * 1e3:9.1f} ms  ({how}; {calls} steps)")


if __name__ == "__main__":
    main()
