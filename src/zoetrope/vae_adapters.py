"""Pretrained video VAEs from diffusers behind the `CausalVAE` interface.

Users who already have a VAE on disk (Wan 2.1, LTX-Video, CogVideoX, or the per-frame image VAE
of Stable Diffusion that DiT used) can train a zoetrope DiT on its latents. Each adapter wraps the
diffusers model and gives it the interface the pipeline and trainer use:

- `config`: a `VAEConfig` with `kind` = the diffusers class name, `latent_channels`,
  `temporal_downsample` and `spatial_downsample` filled in;
- `latent_shape(frames, height, width)` / `pixel_shape(t, h, w)`, through `zoetrope.vae`'s one
  shape function, so error messages are the same;
- `encode_latent(video, generator, sample)` -> latent normalised the way that model's own
  pipelines normalise it, and `decode_latent(z)` -> pixels.

Video is (B, 3, T, H, W) in [-1, 1]; latents are (B, C, t, h, w). diffusers is an optional extra,
imported only when an adapter is built; models load from a local directory only (never the Hub).
`load_vae` picks the right class from a directory's config.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from .config import VAEConfig
from .vae import CausalVAE, DiagonalGaussian, VAEShapes
from .errors import UserError
from .weights import WeightsError, read_config, require_safetensors


class DiffusersVAE(VAEShapes, nn.Module):
    """Base adapter: subclasses say how to encode, decode and normalise; shapes live here."""

    class_name = ""  # the diffusers class this adapter wraps

    def __init__(self, model: nn.Module, channels: int, temporal: int, spatial: int,
                 path: str = ""):
        super().__init__()
        self.model = model
        self.config = VAEConfig(kind=self.class_name, latent_channels=channels,
                                temporal_downsample=temporal, spatial_downsample=spatial,
                                pretrained_path=path)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "DiffusersVAE":
        """Load the wrapped diffusers model from a local directory (no download) in eval mode."""
        model_cls = getattr(_diffusers(), cls.class_name)
        require_safetensors(path)  # and only safetensors load, never a pickled .bin
        model = model_cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        return cls(model.eval(), path=str(path)).eval()

    # -- what the DiT sees -------------------------------------------------------------------

    def encode(self, video: Tensor, chunk_size: int | None = None) -> DiagonalGaussian:
        """Pixels (B, 3, T, H, W) -> posterior over raw latents; `chunk_size` is ignored."""
        self.latent_shape(*video.shape[2:])
        return DiagonalGaussian(*self._moments(video.to(self._dtype)))

    def encode_latent(self, video: Tensor, generator: torch.Generator | None = None,
                      sample: bool = False, chunk_size: int | None = None) -> Tensor:
        """Pixels -> normalised latent (the posterior mean unless `sample`)."""
        posterior = self.encode(video)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.normalise(z).to(video.dtype)

    def decode_latent(self, z: Tensor, chunk_size: int | None = None) -> Tensor:
        """Normalised latent (B, C, t, h, w) -> pixels (B, 3, T, H, W); `chunk_size` is ignored."""
        return self._decode(self.denormalise(z.to(self._dtype))).to(z.dtype)

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- per model ---------------------------------------------------------------------------

    def _moments(self, video: Tensor) -> tuple[Tensor, Tensor]:
        dist = self.model.encode(video).latent_dist
        return dist.mean, dist.logvar  # (B, C, t, h, w) each

    def _decode(self, z: Tensor) -> Tensor:
        return self.model.decode(z).sample

    def normalise(self, z: Tensor) -> Tensor:
        """Raw latent -> what the DiT sees."""
        raise NotImplementedError

    def denormalise(self, z: Tensor) -> Tensor:
        """Inverse of `normalise`."""
        raise NotImplementedError


def _channel_stats(mean, std, z: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel statistics (lists or tensors) shaped to broadcast over (B, C, t, h, w)."""
    shape = (1, -1, 1, 1, 1)
    return (torch.as_tensor(mean, dtype=z.dtype, device=z.device).view(shape),
            torch.as_tensor(std, dtype=z.dtype, device=z.device).view(shape))


class WanVAE(DiffusersVAE):
    """Wan 2.1 causal 3D VAE (arXiv 2503.20314): 1 + 4k frames, 8x space, per-channel stats."""

    class_name = "AutoencoderKLWan"

    def __init__(self, model: nn.Module, path: str = ""):
        cfg = model.config
        temporal = cfg.get("scale_factor_temporal") or 2 ** sum(cfg.temperal_downsample)
        spatial = cfg.get("scale_factor_spatial") or 2 ** len(cfg.temperal_downsample)
        super().__init__(model, cfg.z_dim, temporal, spatial, path)

    def normalise(self, z: Tensor) -> Tensor:
        mean, std = _channel_stats(self.model.config.latents_mean, self.model.config.latents_std, z)
        return (z - mean) / std  # as WanPipeline does

    def denormalise(self, z: Tensor) -> Tensor:
        mean, std = _channel_stats(self.model.config.latents_mean, self.model.config.latents_std, z)
        return z * std + mean


class LTXVideoVAE(DiffusersVAE):
    """LTX-Video VAE (arXiv 2501.00103): 1 + 8k frames, 32x space, per-channel stats + scale."""

    class_name = "AutoencoderKLLTXVideo"

    def __init__(self, model: nn.Module, path: str = ""):
        super().__init__(model, model.config.latent_channels, model.temporal_compression_ratio,
                         model.spatial_compression_ratio, path)

    def _decode(self, z: Tensor) -> Tensor:
        # Timestep-conditioned decoders (LTX 0.9.1+) get t = 0: LTXPipeline's default
        # decode_timestep, which also means no decode noise is mixed in.
        temb = z.new_zeros(z.shape[0]) if self.model.config.timestep_conditioning else None
        return self.model.decode(z, temb).sample

    def normalise(self, z: Tensor) -> Tensor:
        mean, std = _channel_stats(self.model.latents_mean, self.model.latents_std, z)
        return (z - mean) * self.model.config.scaling_factor / std  # as LTXPipeline does

    def denormalise(self, z: Tensor) -> Tensor:
        mean, std = _channel_stats(self.model.latents_mean, self.model.latents_std, z)
        return z * std / self.model.config.scaling_factor + mean


class CogVideoXVAE(DiffusersVAE):
    """CogVideoX VAE (arXiv 2408.06072): 1 + 4k frames, 8x space, one scaling factor."""

    class_name = "AutoencoderKLCogVideoX"

    def __init__(self, model: nn.Module, path: str = ""):
        cfg = model.config
        super().__init__(model, cfg.latent_channels, int(cfg.temporal_compression_ratio),
                         2 ** (len(cfg.block_out_channels) - 1), path)

    def normalise(self, z: Tensor) -> Tensor:
        return z * self.model.config.scaling_factor  # as CogVideoXPipeline does

    def denormalise(self, z: Tensor) -> Tensor:
        return z / self.model.config.scaling_factor


class ImageVAE(DiffusersVAE):
    """The 2D `AutoencoderKL` of Stable Diffusion (used by DiT), applied to each frame alone."""

    class_name = "AutoencoderKL"

    def __init__(self, model: nn.Module, path: str = ""):
        cfg = model.config
        spatial = 2 ** (len(cfg.block_out_channels) - 1)
        super().__init__(model, cfg.latent_channels, 1, spatial, path)

    def _moments(self, video: Tensor) -> tuple[Tensor, Tensor]:
        frames = rearrange(video, "b c t h w -> (b t) c h w")  # every frame is an image
        dist = self.model.encode(frames).latent_dist
        b = video.shape[0]
        return (rearrange(dist.mean, "(b t) c h w -> b c t h w", b=b),
                rearrange(dist.logvar, "(b t) c h w -> b c t h w", b=b))

    def _decode(self, z: Tensor) -> Tensor:
        frames = self.model.decode(rearrange(z, "b c t h w -> (b t) c h w")).sample
        return rearrange(frames, "(b t) c h w -> b c t h w", b=z.shape[0])

    def normalise(self, z: Tensor) -> Tensor:
        cfg = self.model.config  # z * 0.18215 for SD 1.x/2.x; SD3/Flux also shift
        return (z - (cfg.get("shift_factor") or 0.0)) * cfg.scaling_factor

    def denormalise(self, z: Tensor) -> Tensor:
        cfg = self.model.config
        return z / cfg.scaling_factor + (cfg.get("shift_factor") or 0.0)


ADAPTERS: dict[str, type[DiffusersVAE]] = {
    a.class_name: a for a in (WanVAE, LTXVideoVAE, CogVideoXVAE, ImageVAE)
}


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise UserError("pretrained diffusers VAEs need the diffusers extra: "
                        "pip install 'zoetrope[diffusers]'") from None
    return diffusers


def load_vae(source: str | Path | VAEConfig) -> CausalVAE | DiffusersVAE:
    """A VAE from a directory (ours or a diffusers one, by config.json) or from a VAEConfig.

    A VAEConfig of kind "causal3d" without `pretrained_path` gives a fresh, untrained CausalVAE.
    A pipeline directory holding `vae/` may be passed instead of the `vae/` directory itself.
    """
    if isinstance(source, VAEConfig):
        if not source.pretrained_path:
            if source.kind == "causal3d":
                return CausalVAE(source)
            raise WeightsError(f"vae.kind={source.kind!r} needs vae.pretrained_path (a local "
                               f"directory holding the model)")
        source = source.pretrained_path
    path = Path(source)
    if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        path = path / "vae"
    data = read_config(path)
    if data.get("class") == "CausalVAE":
        return CausalVAE.from_pretrained(path)
    name = data.get("_class_name") or data.get("class")
    if name not in ADAPTERS:
        known = ", ".join(["CausalVAE", *ADAPTERS])
        raise WeightsError(f"{path}/config.json describes {name!r}, not a VAE zoetrope can load; "
                           f"supported: {known}")
    return ADAPTERS[name].from_pretrained(path)
