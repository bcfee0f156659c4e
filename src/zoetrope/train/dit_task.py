"""The DiT task: a text-conditioned DiT trained on the latents of a frozen VAE.

The VAE comes from `train.dit.vae_path`, or, in a two-stage recipe, from the VAE stage's export
(handed over explicitly, never written into the config). The task knows what its dataset
yields: frames, which it encodes through the VAE every step, or latents, from a ready latent cache
(`data.dataset = "cache"`) or from the one it encodes into RUN_DIR/latents (`latent_cache > 0`).

Loss: the recipe's objective through its denoiser (rectified flow, or DDPM with
`diffusion.vlb_weight` weighting a learned variance's L_vlb) on one packed batch per micro-batch,
samples in the order they came; each sample's time, noise, prompt dropout and given latent
frames (`train.masks`) are drawn from its own generator (seed, index). Export: a pipeline
directory through `TextToVideoPipeline.save_pretrained`, the one writer of that format.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .. import diffusion
from ..config import ConfigError, DiTStageConfig, Recipe, differing_fields
from ..data.factory import build_dataset
from ..dit import DiT
from ..patches import Packed, pack
from ..text import build_text_encoder
from .batches import Item, sample_generator, to_video
from .masks import draw_given_frames, given_frames
from .distributed import Dist, barrier


class DiTTrainee(nn.Module):
    """What DiT training updates: the DiT and, when trainable, the text encoder.

    Its forward runs both, so DDP/FSDP see one module call per micro-batch.
    """

    def __init__(self, recipe: Recipe, vae_channels: int, attention: str = "auto"):
        super().__init__()
        self.text_encoder = build_text_encoder(recipe.text)
        config = dataclasses.replace(recipe.dit, in_channels=vae_channels,
                                     text_dim=self.text_encoder.dim)
        self.dit = DiT(config, attention=attention)

    def forward(self, packed: Packed, t: Tensor, prompts: list[str]) -> Tensor:
        text, mask = self.text_encoder(prompts)
        return self.dit(packed, t, text.to(packed.tokens.device), mask.to(packed.tokens.device))


def init_from_pipeline(module: DiTTrainee, path: str | Path) -> None:
    """Copy the DiT and text encoder weights of pipeline directory `path` into `module`
    (`train.dit.init_from`); the DiT configs must be equal, else nothing is copied."""
    from ..text import load_text_encoder
    path = Path(path)
    if not (path / "dit").is_dir():
        raise ConfigError(f"train.dit.init_from: {str(path)!r} is not a pipeline directory (no "
                          "dit/ in it)")
    dit = DiT.from_pretrained(path / "dit")
    diff = differing_fields(module.dit.config, dit.config)
    if diff:
        raise ConfigError(f"train.dit.init_from: {path}/dit differs from the recipe's DiT in "
                          f"{', '.join(diff)}")
    text = load_text_encoder(path / "text_encoder")
    module.dit.load_state_dict(dit.state_dict())
    try:
        module.text_encoder.load_state_dict(text.state_dict())
    except RuntimeError as e:
        raise ConfigError(f"train.dit.init_from: {path}/text_encoder does not fit the recipe's "
                          f"[text] ({str(e).splitlines()[0]})") from None


def load_frozen_vae(path: str | Path, device: torch.device) -> nn.Module:
    """A trained VAE (ours or a diffusers adapter) in eval mode, without gradients."""
    from ..vae_adapters import load_vae
    vae = load_vae(path).to(device).eval()
    vae.requires_grad_(False)
    return vae


@torch.no_grad()
def encode_latents(vae: nn.Module, clips: list, device: torch.device) -> list[Tensor]:
    """Frames uint8 (T, H, W, 3) -> normalised latents (C, t, h, w), one VAE call per size."""
    by_size: dict[tuple, list[int]] = {}
    for i, frames in enumerate(clips):
        by_size.setdefault(tuple(frames.shape), []).append(i)
    out: list[Tensor] = [torch.empty(0)] * len(clips)
    for idx in by_size.values():
        video = torch.cat([to_video(clips[i]) for i in idx]).to(device)
        with torch.autocast(device.type, enabled=False):  # fp32: on CPU 1.6x faster than bf16 here
            z = vae.encode_latent(video)
        for j, i in enumerate(idx):
            out[i] = z[j].float()
    return out


def _check_cache_vae(cache, vae_path: str | Path, where: str) -> None:
    """Latents only mean something to the VAE that made them: refuse a cache of another VAE."""
    from ..weights import read_config
    saved = read_config(vae_path)
    ours = saved.get("class") == cache.vae_config.get("class")  # adapters: diffusers' own config
    diff = [k for k, v in cache.vae_config.items() if ours and k in saved and saved[k] != v]
    if diff:
        raise ConfigError(f"latent cache {where} was encoded with another VAE than the DiT "
                          f"stage's (differs in {', '.join(diff[:4])})")


@dataclass
class DiTTask:
    """Build, loss, export and previews of the DiT stage."""

    recipe: Recipe  # data.sizes are the stage's sizes
    cfg: DiTStageConfig
    vae: nn.Module  # frozen, on this rank's device
    dataset: Any  # sample(index) -> (frames or latent, caption)
    latents: bool  # the dataset yields latents (C, t, h, w), not frames: no encoding per step
    module: DiTTrainee  # what the optimizer updates
    name: str = "dit"
    # index -> whether that sample continues mid-motion (`continuing_given`), else None
    continues: Callable[[int], bool] | None = None

    @classmethod
    def setup(cls, recipe: Recipe, run_dir: Path, d: Dist, vae_dir: Path | None = None,
              progress: bool = False) -> DiTTask:
        """The dataset (or its latent cache), the frozen VAE and a fresh DiT + text encoder."""
        cfg = recipe.train.dit
        if vae_dir is not None and cfg.vae_path:
            raise ConfigError("train.dit.vae_path must be empty when the \"vae\" stage comes "
                              "first: the DiT trains on the VAE that stage exports")
        vae_path = vae_dir or cfg.vae_path
        if not vae_path:
            raise ConfigError("train.dit.vae_path is required to train a DiT alone (or train "
                              "both: stages = [\"vae\", \"dit\"])")
        sizes = cfg.sizes or recipe.data.sizes
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, sizes=sizes))
        dataset = build_dataset(recipe.data, cfg.seed)
        continues = getattr(dataset, "continues", None) if cfg.continuing_given else None
        if cfg.continuing_given and (continues is None or not recipe.data.continuing):
            raise ConfigError("train.dit.continuing_given needs continuing clips: data.dataset "
                              "= \"shapes\" with data.continuing > 0")
        vae = load_frozen_vae(vae_path, d.device)
        latents = recipe.data.dataset == "cache"
        if latents:
            _check_cache_vae(dataset, vae_path, repr(recipe.data.path))
        elif cfg.latent_cache:
            dataset = cls._encode_cache(dataset, vae, cfg.latent_cache, run_dir, d, progress)
            latents = True
            if continues is not None:  # the cache's sample k is the world's k mod its count
                world, count = continues, cfg.latent_cache
                continues = lambda index: world(index % count)  # noqa: E731
        channels = vae.latent_shape(*sizes[0])[0]
        module = DiTTrainee(recipe, channels, cfg.attention)
        if cfg.init_from:
            init_from_pipeline(module, cfg.init_from)
        return cls(recipe, cfg, vae, dataset, latents, module.to(d.device), continues=continues)

    @staticmethod
    def _encode_cache(dataset, vae: nn.Module, count: int, run_dir: Path, d: Dist, progress: bool):
        """Encode samples 0..count-1 into RUN_DIR/latents once (rank 0; a rerun continues it)
        and serve them as the dataset: the VAE encoder then costs nothing per step."""
        from ..data.cache import LatentCache, encode_dataset
        out = run_dir / "latents"
        if d.main:
            encode_dataset(dataset, vae, out, count, batch_size=32, progress=progress)
        barrier()
        return LatentCache(out)

    def blocks(self) -> list[nn.Module]:
        return list(self.module.dit.blocks)  # FSDP2 shards and activation checkpointing units

    def latent_shape(self, sample: Tensor) -> tuple[int, ...]:
        """(C, t, h, w) of a sample: its own shape, or what the VAE makes of its frames."""
        return tuple(sample.shape) if self.latents else self.vae.latent_shape(*sample.shape[:3])

    def tokens(self, sample: Tensor) -> int:
        """The DiT tokens of a sample (for token budgets)."""
        _, t, h, w = self.latent_shape(sample)
        pt, ph, pw = self.module.dit.config.patch_size
        return (t // pt) * (h // ph) * (w // pw)

    def loss(self, model: nn.Module, items: list[Item], device: torch.device) -> tuple[Tensor, int]:
        """Diffusion loss of one micro-batch, averaged over its samples; also its tokens."""
        samples = [sample for _, (sample, _) in items]
        latents = ([s.to(device, torch.float32) for s in samples] if self.latents
                   else encode_latents(self.vae, samples, device))
        packed = pack(latents, self.module.dit.config.patch_size)
        t, noise, keep, prompts = self.draw(items, packed)
        packed = packed.to(device)
        t, noise = t.to(device)[packed.sample_ids], noise.to(device)
        keep = keep.to(device)  # tokens of given latent frames: clean, t = 0, not in the loss

        def model_fn(x: Tensor, t_: Tensor) -> Tensor:
            return model(packed.with_tokens(x), t_, prompts)

        # the objective's conventions, diffusion.vlb_weight included, belong to its denoiser
        denoiser = diffusion.build_denoiser(self.recipe.diffusion, model_fn)
        loss = denoiser.loss(packed.tokens, t, noise, sample_ids=packed.sample_ids,
                             num_samples=packed.num_samples, keep=keep)
        return loss, packed.num_tokens

    def draw(self, items: list[Item], packed: Packed) -> tuple[Tensor, Tensor, Tensor, list[str]]:
        """Per sample, from its own generator: time (B,), noise (N, D), the prompt (empty when
        dropped for classifier-free guidance) and, per token (N,), whether its latent frame is
        given (`first_frame_cond`, or `given_share` through `masks.draw_given_frames`)."""
        d, pt = self.recipe.diffusion, packed.patch_size[0]
        ts, noises, keeps, prompts = [], [], [], []
        starts = [0, *torch.tensor(packed.lengths).cumsum(0).tolist()]
        for (index, (_, caption)), n, shape, start in zip(items, packed.lengths, packed.shapes,
                                                          starts):
            g = sample_generator(self.cfg.seed, index)
            if d.objective == "flow":
                shift = diffusion.resolution_shift(n, d.shift_base_tokens)
                ts.append(diffusion.sample_time_logit_normal(1, g, d.logit_mean, d.logit_std,
                                                             shift))
            else:
                ts.append(diffusion.sample_time_ddpm(1, g, d.num_train_timesteps))
            noises.append(torch.randn((n, packed.tokens.shape[1]), generator=g))
            drop = torch.rand(1, generator=g).item() < d.text_dropout
            prompts.append("" if drop else caption)
            first = torch.rand(1, generator=g).item() < self.cfg.first_frame_cond
            if self.continues is not None and self.continues(index):  # never text-to-video
                frames = given_frames("prefix", shape[1] // pt, g)
            else:
                frames = draw_given_frames(g, shape[1] // pt, self.cfg.given_share,
                                           self.cfg.given_kinds)  # (t,) over patch frames
            frames[0] |= first
            keeps.append(frames[packed.positions[start:start + n, 0]])
        return torch.cat(ts), torch.cat(noises), torch.cat(keeps), prompts

    def fresh(self) -> nn.Module:
        """A new DiT + text encoder of the same configs, to load the trained weights into."""
        return DiTTrainee(self.recipe, self.module.dit.config.in_channels, self.cfg.attention)

    def pipeline(self, module: DiTTrainee):
        """The trained models as a `TextToVideoPipeline` at the stage's sizes."""
        from ..pipeline import TextToVideoPipeline
        data = self.recipe.data
        fps = {"fps": data.fps} if data.fps else {}  # 0 (each clip's own rate): the default
        return TextToVideoPipeline(self.vae, module.dit, module.text_encoder, self.recipe.diffusion,
                                   default_size=data.sizes[0], sizes=data.sizes, **fps)

    def export(self, module: nn.Module, out: Path) -> None:
        """Write the pipeline directory `out` (dit/, vae/, text_encoder/, pipeline.json) through
        the one writer of that format, which replaces an old one only once the new is complete."""
        self.pipeline(module).save_pretrained(out)

    def preview(self, module: nn.Module, path: Path) -> None:
        """Sample the preview prompts side by side into one GIF at `path`."""
        if not self.cfg.preview_prompts:
            return
        from ..pipeline import preview_gif
        modes = [(m, m.training) for m in module.modules()]  # the pipeline switches to eval
        try:
            preview_gif(self.pipeline(module), self.cfg.preview_prompts, path)
        finally:
            for m, training in modes:
                m.train(training)
