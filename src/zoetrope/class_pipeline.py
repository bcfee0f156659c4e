"""Class-conditional image generation, as the DiT paper samples its ImageNet models.

`ClassToImagePipeline(dit, vae)(class_labels, ...) -> ImageOutput`: noise latents (B, 4, H/8, W/8)
-> DDPM (or DDIM) sampling with classifier-free guidance -> the 2D AutoencoderKL -> uint8 images.
It reuses the diffusion package: `DDPMDenoiser` over the full linear schedule, `ddpm_grid` with
improved DDPM's respacing ("iddpm", 250 steps by default, as DiT's sample.py), `sample_ddpm` with
the learned variance or `sample_ddim` (eta = 0), and `classifier_free_guidance`.

Conventions:
- A latent is one row of the sampler's x: (B, C * h * w), channel first, so an image is a sample
  and `guided_columns` = channels * h * w guides the first channels (DiT's released sampler
  guides 3 of 4: `guided_channels`, the default a converted checkpoint records).
- The model function turns the sampler's t (in [0, 1]) back into integer DDPM steps, round(t * T),
  and calls `DiT.forward_image`; label `num_classes` is the null class of guidance.
- Noise (the start and every ancestral step) is drawn for the whole batch from a CPU generator
  seeded with `seed`: a seed and a list of labels give the same images on every device.
- The VAE is the 2D AutoencoderKL of Stable Diffusion through `vae_adapters.ImageVAE`, from a local
  diffusers directory; its scaling factor (0.18215) is undone before decoding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .diffusion import (DDPMDenoiser, DDPMSchedule, classifier_free_guidance, ddpm_grid,
                        generator_noise, sample_ddim, sample_ddpm)
from .dit import DiT
from .errors import UserError

SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim}
DEFAULT_STEPS = 250  # DiT's sample.py
DEFAULT_GUIDANCE = 4.0  # DiT's sample.py; the paper's FID 2.27 used 1.5


@dataclass
class ImageOutput:
    """Generated images: uint8 (B, H, W, 3), the labels they show and the seed of their noise."""

    images: np.ndarray
    labels: list[int]
    seed: int | None

    def grid(self, columns: int = 4, padding: int = 2) -> np.ndarray:
        """The images tiled row by row, `columns` per row, on black with `padding` pixels."""
        b, h, w, _ = self.images.shape
        cols = min(columns, b)
        rows = -(-b // cols)
        out = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, 3), np.uint8)
        for i, image in enumerate(self.images):
            top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
            out[top:top + h, left:left + w] = image
        return out

    def save_grid(self, path: str | Path, columns: int = 4) -> Path:
        """Write the grid as a PNG."""
        from .data.video import write_video

        if Path(path).suffix.lower() != ".png":
            raise UserError(f"an image grid is written as .png, not {str(path)!r}")
        return write_video(path, self.grid(columns)[None], fps=1.0)


class ClassToImagePipeline:
    """A class-conditional image DiT (e.g. a converted DiT-XL/2) and a 2D AutoencoderKL."""

    def __init__(self, dit: DiT, vae, image_size: int = 256, guided_channels: int | None = None):
        if not dit.config.num_classes:
            raise UserError("this DiT is not class-conditional (num_classes = 0)")
        self.dit, self.vae = dit.eval(), vae
        self.image_size = image_size  # default output side in pixels
        self.guided_channels = guided_channels  # None: guide every eps channel
        self.schedule = DDPMSchedule.linear()  # DiT: 1000 linear betas 1e-4 .. 0.02

    @classmethod
    def from_pretrained(cls, model: str | Path, vae: str | Path | None = None,
                        attention: str = "auto") -> ClassToImagePipeline:
        """A DiT directory (`zoetrope convert dit` writes one) and a diffusers AutoencoderKL one."""
        dit = DiT.from_pretrained(model, attention)
        extra = getattr(dit, "extra_config", {})
        loaded = None
        if vae is not None:
            from .vae_adapters import ImageVAE
            loaded = ImageVAE.from_pretrained(vae)
        return cls(dit, loaded, extra.get("_image_size", 256), extra.get("_guided_channels"))

    def to(self, device: str | torch.device) -> ClassToImagePipeline:
        self.dit.to(device)
        if self.vae is not None:
            self.vae.to(device)
        return self

    def labels(self, class_labels: Sequence[int]) -> Tensor:
        """Check labels against the model's classes: a (B,) long tensor."""
        n = self.dit.config.num_classes
        if not class_labels:
            raise UserError("give at least one class label")
        for label in class_labels:
            if not 0 <= int(label) < n:
                raise UserError(f"class label {label} is outside 0..{n - 1}")
        return torch.tensor([int(v) for v in class_labels], dtype=torch.long)

    @torch.no_grad()
    def __call__(self, class_labels: Sequence[int], num_inference_steps: int = DEFAULT_STEPS,
                 guidance_scale: float = DEFAULT_GUIDANCE, sampler: str = "ddpm",
                 seed: int | None = None, image_size: int | None = None,
                 guided_channels: int | None | str = "model", output_type: str = "np"):
        """Sample one image per label; `output_type="latent"` returns the latents (B, C, h, w).

        guided_channels: "model" (what the model directory records; 3 for converted official
        checkpoints), an int, or None for every channel.
        """
        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}; class-conditional sampling takes "
                            f"{', '.join(SAMPLERS)}")
        y = self.labels(class_labels)
        seed = random.randrange(2 ** 31) if seed is None else seed
        generator = torch.Generator().manual_seed(seed)
        shape = self._latent_shape(image_size or self.image_size)
        device = next(self.dit.parameters()).device
        x = torch.randn((len(y), *shape), generator=generator).to(device)  # (B, C, h, w)
        channels = self.guided_channels if guided_channels == "model" else guided_channels
        model = self.model_fn(y.to(device), shape, guidance_scale, channels)
        grid = ddpm_grid(self.schedule.num_train_timesteps, num_inference_steps, "iddpm")
        rows = x.flatten(1)  # (B, C * h * w): one sample per row
        rows = SAMPLERS[sampler](DDPMDenoiser(model, self.schedule), rows, grid,
                                 generator_noise(rows, generator))
        latents = rows.view(len(y), *shape)
        if output_type == "latent":
            return latents
        return ImageOutput(self.decode(latents), y.tolist(), seed)

    def _latent_shape(self, image_size: int) -> tuple[int, int, int]:
        factor = 8 if self.vae is None else self.vae.config.spatial_downsample
        step = factor * self.dit.config.patch_size[1]
        if image_size <= 0 or image_size % step:
            raise UserError(f"image size {image_size} must be a positive multiple of {step}")
        side = image_size // factor
        return self.dit.config.in_channels, side, side

    def model_fn(self, y: Tensor, shape: tuple[int, int, int], guidance_scale: float,
                 guided_channels: int | None):
        """The (guided) network as samplers call it: rows (N, C * h * w), t (N,) in [0, 1]."""
        steps = self.schedule.num_train_timesteps
        null = torch.full_like(y, self.dit.config.num_classes)

        def run(x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
            step = (t.double() * steps).round().long()  # back to DiT's integer steps
            return self.dit.forward_image(x.view(len(x), *shape), step, labels).flatten(1)

        def cond_fn(x: Tensor, t: Tensor) -> Tensor:
            return run(x, t, y)

        if guidance_scale == 1:
            return cond_fn
        if guided_channels is not None and not 1 <= guided_channels <= shape[0]:
            raise UserError(f"guided channels must be in 1..{shape[0]}, got {guided_channels}")
        columns = None if guided_channels is None else guided_channels * shape[1] * shape[2]
        return classifier_free_guidance(lambda x2, t2: run(x2, t2, torch.cat([y, null])),
                                        guidance_scale, cond_fn=cond_fn, guided_columns=columns)

    def decode(self, latents: Tensor) -> np.ndarray:
        """Latents (B, C, h, w) -> uint8 images (B, H, W, 3) through the VAE."""
        if self.vae is None:
            raise UserError("decoding needs a VAE: pass a diffusers AutoencoderKL directory")
        from .pipeline import to_uint8

        pixels = self.vae.decode_latent(latents[:, :, None])  # (B, 3, 1, H, W) in [-1, 1]
        return np.stack(to_uint8(pixels))[:, 0]
