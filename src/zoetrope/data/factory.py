"""The one dataset factory: a `DataConfig` (a recipe's [data], or `zoetrope encode`'s arguments)
to an index-addressable dataset, `sample(index) -> (sample, caption)`.

Every dataset it builds is deterministic per index: sample k depends only on (seed, k), which is
what makes resumed and multi-process training read exactly the data of one uninterrupted run.
Procedural worlds and caption folders yield frames uint8 (T, H, W, 3); a latent cache yields VAE
latents float (C, t, h, w) and says so with `is_latent = True`.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..config import ConfigError, DataConfig

DATASETS = ("shapes", "mnist", "folder", "cache")


def build_dataset(config: DataConfig, seed: int = 0,
                  sizes: Sequence[Sequence[int]] | None = None) -> Any:
    """The dataset `config` names, drawing clip sizes from `sizes` (default: `config.sizes`)."""
    sizes = [tuple(s) for s in (sizes or config.sizes)]
    if config.dataset == "shapes":
        from .shapes import ShapesWorld
        from .shapes import SPEED_RANGE
        scale = tuple(config.object_scale) if config.object_scale else None
        return ShapesWorld(sizes=sizes, seed=seed, two_objects=config.two_objects,
                           collide=config.collide, occluder=config.occluder,
                           speed_range=tuple(config.speed_range or SPEED_RANGE),
                           scale_range=scale, holdout=config.holdout,
                           continuing=config.continuing,
                           continuing_caption=config.continuing_caption)
    if config.dataset == "mnist":
        from .mnist import MovingMNIST
        return MovingMNIST(root=config.path or None, sizes=sizes, seed=seed)
    if config.dataset in ("folder", "cache") and not config.path:
        raise ConfigError(f"data.path is required for data.dataset = {config.dataset!r}")
    if config.dataset == "folder":
        from .folder import IndexedFolder
        # fps = 0 reads every clip at its own frame rate
        return IndexedFolder(config.path, sizes=sizes, fps=config.fps or None, seed=seed)
    if config.dataset == "cache":
        from .cache import LatentCache
        return LatentCache(config.path)  # sizes and seed were fixed when it was encoded
    raise ConfigError(f"unknown data.dataset {config.dataset!r}; valid: {', '.join(DATASETS)}")
