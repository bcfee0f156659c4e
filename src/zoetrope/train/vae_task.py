"""The VAE task: a causal video VAE trained on clips of the recipe's dataset.

Loss: reconstruction plus `kl_weight` times the KL term (`vae.vae_loss`), clips of one size
batched together. Export: the EMA weights, with the latent mean/std fitted on held-out clips so a
DiT trained on its latents sees unit scale, written to `final/vae/`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ConfigError, Recipe, VAEStageConfig, differing_fields
from ..data.factory import build_dataset
from ..errors import atomic_write_dir
from ..vae import CausalVAE, set_scaling_from_data, vae_loss
from .batches import Item, to_video
from .distributed import Dist

HELD_OUT = 10**9  # first dataset index of the clips that fit the latent scaling (never trained on)


def init_from_vae(module: CausalVAE, path: str | Path) -> None:
    """Copy the weights and latent scaling of the VAE at `path` (a VAE directory or a pipeline
    directory holding vae/) into `module` (`train.vae.init_from`); the configs must be equal
    apart from the scaling, else nothing is copied."""
    path = Path(path)
    if (path / "vae" / "config.json").is_file():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise ConfigError(f"train.vae.init_from: {str(path)!r} is neither a VAE directory nor a "
                          "pipeline directory (no config.json or vae/config.json in it)")
    vae = CausalVAE.from_pretrained(path)
    diff = differing_fields(module.config, vae.config, ignore=("scaling_mean", "scaling_std"))
    if diff:
        raise ConfigError(f"train.vae.init_from: {path} differs from the recipe's [vae] in "
                          f"{', '.join(diff)}")
    module.load_state_dict(vae.state_dict())
    module.config.scaling_mean = vae.config.scaling_mean
    module.config.scaling_std = vae.config.scaling_std


@dataclass
class VAETask:
    """Build, loss and export of the VAE stage."""

    recipe: Recipe
    cfg: VAEStageConfig
    dataset: Any  # sample(index) -> (frames uint8 (T, H, W, 3), caption)
    module: CausalVAE  # what the optimizer updates
    name: str = "vae"

    @classmethod
    def setup(cls, recipe: Recipe, run_dir: Path, d: Dist) -> VAETask:
        """The dataset at the stage's sizes and a fresh VAE on this rank's device."""
        if recipe.data.dataset == "cache":
            raise ConfigError("data.dataset = \"cache\" holds VAE latents: it can train a DiT "
                              "(stages = [\"dit\"]), not a VAE")
        cfg = recipe.train.vae
        dataset = build_dataset(recipe.data, cfg.seed, cfg.sizes)
        module = CausalVAE(dataclasses.replace(recipe.vae))
        if cfg.init_from:
            init_from_vae(module, cfg.init_from)
        if not cfg.train_encoder:
            module.encoder.requires_grad_(False)
        return cls(recipe, cfg, dataset, module.to(d.device))

    def blocks(self) -> list[nn.Module]:
        return []  # sharded and checkpointed as one unit

    def tokens(self, frames) -> int:
        """A clip's size for token budgets: its pixels per channel (T * H * W)."""
        return int(frames.shape[0] * frames.shape[1] * frames.shape[2])

    def loss(self, model: nn.Module, items: list[Item], device: torch.device) -> tuple[Tensor, int]:
        """Mean loss over the micro-batch's clips (those of equal size run together); pixels."""
        by_size: dict[tuple, list[Tensor]] = {}
        for _, (frames, _) in items:
            by_size.setdefault(tuple(frames.shape), []).append(to_video(frames))
        total, pixels = 0.0, 0
        for videos in by_size.values():
            video = torch.cat(videos).to(device)  # (B, 3, T, H, W)
            loss, _ = vae_loss(model, video, self.cfg.kl_weight)
            total = total + loss * len(videos)
            pixels += video[:, 0].numel()
        return total / len(items), pixels

    def fresh(self) -> nn.Module:
        """A new VAE of the same config (on the current default device), to load weights into.

        It gets a copy of the trained module's config (the recipe's, or with `init_from` the
        scaling that VAE came with): fitting the scaling at export must not edit the recipe."""
        return CausalVAE(dataclasses.replace(self.module.config))

    def export(self, module: nn.Module, out: Path) -> None:
        """Fit the latent scaling on held-out clips, then write `out/vae/` (whole or not at all).

        A decoder trained alone keeps its encoder's scaling: the latents have not changed."""
        if self.cfg.train_encoder:
            self.fit_scaling(module)
        atomic_write_dir(out, lambda tmp: module.save_pretrained(tmp / "vae"))

    @torch.no_grad()
    def fit_scaling(self, vae: CausalVAE, samples: int = 32) -> None:
        """Set the VAE's latent mean/std from `samples` held-out clips (unit-scale latents)."""
        clips = (self.dataset.sample(HELD_OUT + i)[0] for i in range(samples))
        set_scaling_from_data(vae, (vae.encode(to_video(c)).mode() for c in clips))

    def preview(self, module: nn.Module, path: Path) -> None:
        pass  # a VAE has nothing to sample from prompts
