"""Training: one loop from a laptop CPU to `torchrun` on many GPUs, and one task per model.

`train(recipe, run_dir)` trains the stages `recipe.train.stages` lists, each with its own
section of settings:

- ["vae"]: the causal video VAE (`VAETask`, settings in [train.vae]) -> RUN_DIR/final/vae;
- ["dit"]: the DiT and text encoder (`DiTTask`, settings in [train.dit]) on the latents of the
  frozen VAE at `train.dit.vae_path` -> RUN_DIR/final, a pipeline directory;
- ["vae", "dit"]: both in sequence in RUN_DIR/vae and RUN_DIR/dit; the DiT stage is handed the
  VAE the first stage exported, and the pipeline is copied to RUN_DIR/final.
- ["distill"]: a few-step student of the pipeline at `train.distill.teacher` (`DistillTask`,
  rectified-flow reflow on teacher pairs, settings in [train.distill]) -> RUN_DIR/final.

Modules: `loop` (the `Loop`: precision, EMA, accumulation, checkpoints, signals, export),
`distributed` (torchrun, FSDP2/DDP wrapping, full state dicts), `batches` (which samples each
step trains on, fetched by DataLoader workers), `vae_task`, `dit_task` and `distill_task`. Rerunning the same
command resumes bit-exactly; see `loop` and `batches` for why. `lock` keeps a second trainer
out of a run directory in use.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..config import Recipe
from ..errors import atomic_write_dir
from .batches import sample_generator, to_video
from .dit_task import DiTTask
from .distributed import barrier, setup_distributed
from .lock import RunLocked, run_lock
from .loop import Interrupted, Loop, TrainingError, stage_loop
from .vae_task import VAETask

__all__ = ["DiTTask", "Interrupted", "Loop", "RunLocked", "TrainingError", "VAETask",
           "run_lock", "sample_generator", "stage_loop", "to_video", "train"]


def train(recipe: Recipe, run_dir: str | Path, progress: bool = True) -> Path:
    """Train the recipe's stages into `run_dir` (resuming where checkpoints are); returns final/.

    The run directory is locked for the whole run: a second trainer on it refuses (`run_lock`)."""
    with run_lock(run_dir, setup_distributed()):
        return _train_stages(recipe, Path(run_dir), progress)


def _train_stages(recipe: Recipe, run_dir: Path, progress: bool) -> Path:
    """Train each stage in order; with two, the DiT stage trains on the VAE the first exported."""
    stages = recipe.train.stages
    if len(stages) == 1:
        return stage_loop(recipe, stages[0], run_dir, progress).run()
    vae_final = stage_loop(recipe, "vae", run_dir / "vae", progress).run()
    dit_loop = stage_loop(recipe, "dit", run_dir / "dit", progress, vae_dir=vae_final / "vae")
    dit_final = dit_loop.run()
    if setup_distributed().main:  # whole or not at all: copied beside, then renamed into place
        atomic_write_dir(run_dir / "final",
                         lambda tmp: shutil.copytree(dit_final, tmp, dirs_exist_ok=True))
    barrier()
    return run_dir / "final"
