"""Copy a trained pipeline directory into the package as the bundled demo model.

    python scripts/bundle_model.py runs/shapes-demo/final

writes src/zoetrope/assets/shapes-demo/ (shipped with `pip install`). Every component is stored in
float16 to stay small (loading upcasts to float32); for the demo VAE this moved held-out PSNR by
0.001 dB (30.328 -> 30.327 at 17x64x64).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from zoetrope import weights
from zoetrope.dit import DiT
from zoetrope.text import load_text_encoder
from zoetrope.vae import CausalVAE

TARGET = Path(__file__).resolve().parents[1] / "src" / "zoetrope" / "assets" / "shapes-demo"


def main(source: str) -> None:
    source_dir = Path(source)
    tmp = TARGET.with_name(TARGET.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    weights.save_pretrained(DiT.from_pretrained(source_dir / "dit"), tmp / "dit", dtype=torch.float16)
    weights.save_pretrained(load_text_encoder(source_dir / "text_encoder"), tmp / "text_encoder",
                            dtype=torch.float16)
    weights.save_pretrained(CausalVAE.from_pretrained(source_dir / "vae"), tmp / "vae",
                            dtype=torch.float16)
    shutil.copy(source_dir / "pipeline.json", tmp / "pipeline.json")
    shutil.rmtree(TARGET, ignore_errors=True)
    tmp.rename(TARGET)
    size = sum(p.stat().st_size for p in TARGET.rglob("*") if p.is_file())
    print(f"bundled {source_dir} into {TARGET} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/bundle_model.py RUN_DIR/final")
    main(sys.argv[1])
