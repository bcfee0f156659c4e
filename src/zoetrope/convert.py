"""Convert the checkpoints released with the DiT paper (Peebles and Xie, arXiv 2212.09748).

`convert_dit(CHECKPOINT.pt, DIR)` reads a facebookresearch/DiT checkpoint (DiT-XL/2 at 256 or 512
px, or one of its train.py EMA weights) and writes a zoetrope DiT directory (`config.json` +
`model.safetensors`, `weights.save_pretrained`) that `ClassToImagePipeline` samples.

Safety: the file is read with `torch.load(weights_only=True)`, which rebuilds tensors and plain
containers and refuses anything else, so no pickled code ever runs. A file that is not a dict of
tensors (or {"ema": dict of tensors}, what DiT's sampler unwraps) is refused.

The mapping is strict: every official key is consumed, every zoetrope parameter filled, shapes
checked; a missing, unexpected or misshapen key is an error naming it. Sizes come from the tensors
(width, patch, channels, depth, classes, learned sigma, the input grid from `pos_embed`); the
head count is not in any tensor, so it is the paper preset's of that depth and width (Table 1),
or `num_heads` for other sizes. Official layout -> zoetrope:

    x_embedder.proj (conv D, C, p, p)      -> x_embedder (linear D, C * p * p), same order
    y_embedder.embedding_table             -> y_embedder
    blocks.i.mlp.fc1 / fc2                 -> blocks.i.mlp.0 / 2
    final_layer.linear rows (p, q, c)      -> rows (c, p, q), zoetrope's token order
    pos_embed (1, n, D)                    -> checked against our sin-cos, not stored
    every other key                        -> the same name
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import torch
from torch import Tensor

from . import weights
from .attention import sincos_2d
from .config import DiTConfig, paper_size_of
from .dit import DiT
from .errors import UserError
from .patches import grid_positions

VAE_FACTOR = 8  # the SD VAE DiT used maps 8x8 pixels to one latent
OFFICIAL_GUIDED_CHANNELS = 3  # the released sampler guides 3 of the 4 latent channels

# official -> zoetrope names that differ; "#" stands for a block number
_RENAMES = {
    "x_embedder.proj.weight": "x_embedder.weight",
    "x_embedder.proj.bias": "x_embedder.bias",
    "y_embedder.embedding_table.weight": "y_embedder.weight",
    "blocks.#.mlp.fc1.weight": "blocks.#.mlp.0.weight",
    "blocks.#.mlp.fc1.bias": "blocks.#.mlp.0.bias",
    "blocks.#.mlp.fc2.weight": "blocks.#.mlp.2.weight",
    "blocks.#.mlp.fc2.bias": "blocks.#.mlp.2.bias",
}
_OFFICIAL_NAME = {ours: theirs for theirs, ours in _RENAMES.items()}


def read_official_state(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an official DiT checkpoint, loaded without running any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no DiT checkpoint at {str(path)!r}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path}: not a plain state dict of tensors, refused ({first})") from None
    if isinstance(data, dict) and isinstance(data.get("ema"), dict):
        data = data["ema"]  # a train.py checkpoint: its EMA weights, as DiT's sampler takes
    if not isinstance(data, dict):
        raise UserError(f"{path}: holds a {type(data).__name__}, not a state dict of tensors")
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise UserError(f"{path}: key {key!r} holds a {type(value).__name__}, not a tensor")
    return data


def _need(state: dict[str, Tensor], key: str, ndim: int) -> Tensor:
    if key not in state:
        raise UserError(f"missing key {key!r}: not a DiT checkpoint")
    if state[key].ndim != ndim:
        raise UserError(f"key {key!r} has shape {tuple(state[key].shape)}, expected {ndim} dims")
    return state[key]


def infer_config(state: dict[str, Tensor], num_heads: int | None = None) -> tuple[DiTConfig, int]:
    """The zoetrope config of an official state dict, and the latent grid side it was made for."""
    dim, channels, patch, _ = _need(state, "x_embedder.proj.weight", 4).shape
    num_patches = _need(state, "pos_embed", 3).shape[1]
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise UserError(f"key 'pos_embed' has {num_patches} positions, not a square grid")
    depth = len({int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    rows = _need(state, "final_layer.linear.weight", 2).shape[0]
    if rows not in (channels * patch * patch, 2 * channels * patch * patch):
        raise UserError(f"key 'final_layer.linear.weight' has {rows} rows: neither eps nor eps "
                        f"and sigma for {channels} channels and patch {patch}")
    if num_heads is None:
        num_heads = paper_size_of(depth, dim)[2]
    classes = _need(state, "y_embedder.embedding_table.weight", 2).shape[0] - 1
    config = DiTConfig(in_channels=channels, patch_size=(1, patch, patch), dim=dim, depth=depth,
                       num_heads=num_heads, num_classes=classes,
                       learn_sigma=rows == 2 * channels * patch * patch, pos_embed="sincos",
                       qk_norm=False, text_dim=0, pooled_text=False)
    return config, side * patch


def _official_name(ours: str) -> str:
    generic = re.sub(r"^blocks\.\d+\.", "blocks.#.", ours)
    if generic not in _OFFICIAL_NAME:
        return ours
    number = ours.split(".")[1] if generic.startswith("blocks.#") else ""
    return _OFFICIAL_NAME[generic].replace("#", number)


def _check_pos_embed(pos_embed: Tensor, config: DiTConfig, side: int) -> None:
    """The official fixed sin-cos table must be ours (zoetrope computes it, so it is not stored)."""
    grid = side // config.patch_size[1]
    ours = sincos_2d(grid_positions((1, grid, grid)), config.dim)  # (n, D)
    if pos_embed.shape != (1, *ours.shape) or (pos_embed[0].float() - ours).abs().max() > 1e-4:
        raise UserError(f"key 'pos_embed' (shape {tuple(pos_embed.shape)}) is not DiT's fixed "
                        f"sin-cos embedding of a {grid}x{grid} grid of width {config.dim}")


def _to_ours(name: str, value: Tensor, config: DiTConfig) -> Tensor:
    """An official tensor in zoetrope's layout (see the module docstring); a tensor not shaped as
    the official one is returned as is, for the caller's shape check to name."""
    p, c = config.patch_size[1], config.out_channels
    if name == "x_embedder.weight" and value.shape == (config.dim, config.in_channels, p, p):
        return value.flatten(1)  # conv (D, C, p, p) -> linear (D, C * p * p)
    if name.startswith("final_layer.linear.") and value.shape[:1] == (p * p * c,):
        rows = value.unflatten(0, (p, p, c))  # official rows are (p, q, c)
        return rows.permute(2, 0, 1, *range(3, rows.ndim)).flatten(0, 2)  # ours (c, p, q)
    return value


def official_to_zoetrope(state: dict[str, Tensor], config: DiTConfig,
                         side: int) -> dict[str, Tensor]:
    """Map every official key onto the zoetrope DiT of `config`; any mismatch names its key."""
    with torch.device("meta"):
        wanted = DiT(config).state_dict()  # zoetrope name -> meta tensor of the right shape
    source = {_official_name(ours): ours for ours in wanted}
    for key in state:
        if key not in source and key != "pos_embed":
            raise UserError(f"unexpected key {key!r}: not part of a {config.depth}-block DiT")
    out = {}
    for key, ours in source.items():
        if key not in state:
            raise UserError(f"missing key {key!r}")
        value = _to_ours(ours, state[key], config)
        if value.shape != wanted[ours].shape:
            raise UserError(f"key {key!r} has shape {tuple(state[key].shape)}, which does not fit "
                            f"{ours} {tuple(wanted[ours].shape)}")
        out[ours] = value.contiguous()
    _check_pos_embed(state["pos_embed"], config, side)
    return out


def convert_dit(checkpoint: str | Path, out: str | Path, num_heads: int | None = None) -> DiTConfig:
    """Convert an official DiT checkpoint into a zoetrope DiT directory; returns its config."""
    state = read_official_state(checkpoint)
    config, side = infer_config(state, num_heads)
    mapped = official_to_zoetrope(state, config, side)
    with torch.device("meta"):
        model = DiT(config)
    model.load_state_dict(mapped, assign=True, strict=True)
    extra = {"_source": "facebookresearch/DiT", "_image_size": side * VAE_FACTOR,
             "_guided_channels": OFFICIAL_GUIDED_CHANNELS}
    weights.save_pretrained(model, out, extra=extra)
    return config
