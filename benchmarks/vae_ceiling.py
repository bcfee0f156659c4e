"""How much of the prompt-following score the VAE alone allows: the critic on VAE reconstructions.

    python benchmarks/vae_ceiling.py                              # the bundled model's VAE
    python benchmarks/vae_ceiling.py runs/demo/vae/final/vae --size 17x64x64 --size 17x48x80

For the same balanced prompts `zoetrope eval` uses (every color x shape x direction once in 84),
each clip is rendered by the shapes world with exactly that color, shape and direction, encoded to
the posterior mean, decoded, and judged by `critique` against its prompt. A DiT sampling through
this VAE cannot beat the reconstructions' scores (the renders themselves score 100%), so a low
number here points at the VAE, not the DiT. Also printed: PSNR of the reconstructions, and the
clips followed and intact per shape and speed band (`zoetrope.eval.speed_band`, the render's
speed over its object's size), as `zoetrope eval`'s report gives them for a model's samples.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zoetrope.critic import critique
from zoetrope.data.shapes import render_clip
from zoetrope.eval import SPEED_BAND_NAMES, build_prompts, speed_band
from zoetrope.pipeline import BUNDLED_MODEL, to_uint8
from zoetrope.train import to_video
from zoetrope.vae import CausalVAE


def measure(vae: CausalVAE, size: tuple[int, int, int], clips: int, seed: int) -> dict:
    """Critic counts (followed, followed and intact, passed) and PSNR over `clips` reconstructions."""
    counts: Counter = Counter()
    errors: Counter = Counter()
    by_speed: dict[str, dict[str, Counter]] = {}  # band -> shape -> clips, followed and intact
    mse = []
    for i, prompt in enumerate(tqdm(build_prompts(clips, seed), desc=f"{size}", leave=False)):
        _, color, shape, _, direction = prompt.split()
        clip = render_clip(*size, color=color, shape=shape, direction=direction,
                           seed=seed * 100_003 + i)
        obj = clip.objects[0]
        speed = float(np.abs(np.diff(obj.centers, axis=0)).max())  # px/frame (bounces reflect it)
        x = to_video(clip.frames)  # (1, 3, T, H, W) in [-1, 1]
        with torch.no_grad():
            y = vae.decode_latent(vae.encode_latent(x)).clamp(-1, 1)
        mse.append((y - x).pow(2).mean().item() / 4)  # in [0, 1] pixel units
        c = critique(to_uint8(y)[0], prompt)
        counts.update(followed=c.followed, intact=c.followed and c.intact, passed=c.passed)
        errors.update(k for k, frames_hit in c.errors.items() if frames_hit)
        cell = by_speed.setdefault(speed_band(speed / obj.size), {}).setdefault(shape, Counter())
        cell.update(clips=1, ok=c.followed and c.intact)
    return {"counts": counts, "errors": errors, "psnr": float(-10 * np.log10(np.mean(mse))),
            "by_speed": by_speed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vae", nargs="?", default=str(BUNDLED_MODEL / "vae"),
                        help="VAE directory (default: the bundled model's)")
    parser.add_argument("--size", action="append", help="FRAMESxHEIGHTxWIDTH, repeatable "
                        "(default 17x64x64)")
    parser.add_argument("--clips", type=int, default=84, help="clips per size (84 = every prompt once)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vae = CausalVAE.from_pretrained(Path(args.vae)).float()
    print(f"VAE {args.vae}: critic on reconstructions of {args.clips} rendered clips per size")
    for text in args.size or ["17x64x64"]:
        size = tuple(int(v) for v in text.split("x"))
        r = measure(vae, size, args.clips, args.seed)
        n, c = args.clips, r["counts"]
        errs = ", ".join(f"{k} {v}" for k, v in r["errors"].most_common()) or "none"
        print(f"  {text}: PSNR {r['psnr']:.2f} dB; all attributes right {c['followed']}/{n}, "
              f"and intact {c['intact']}/{n}, no error {c['passed']}/{n}; errors: {errs}")
        for band in SPEED_BAND_NAMES:
            row = r["by_speed"].get(band)
            if row is None:
                continue
            cells = ", ".join(f"{s} {row[s]['ok']}/{row[s]['clips']}" for s in sorted(row))
            print(f"    speed {band} sizes/frame: followed and intact {cells}")


if __name__ == "__main__":
    main()
