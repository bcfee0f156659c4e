"""Weights on disk: a directory per component holding `config.json` + `model.safetensors`.

No pickles: configs are JSON, tensors are safetensors. Models are built on the meta device and
filled with `load_state_dict(assign=True)`, so loading never allocates random weights first.
Writes are atomic (temporary file, then rename) so an interrupted save never leaves a
half-written component behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ConfigError, from_dict, to_dict
from .errors import UserError

M = TypeVar("M", bound=nn.Module)


class WeightsError(UserError):
    """A weights directory is missing, incomplete or corrupt (message is one line)."""


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_pretrained(model: nn.Module, directory: str | Path, extra: dict | None = None,
                    dtype: torch.dtype | None = None) -> None:
    """Write `model.config` to config.json and its state dict to model.safetensors.

    `dtype` (e.g. torch.float16) stores floating tensors smaller; loading upcasts them to float32.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"class": type(model).__name__, **to_dict(model.config), **(extra or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    _atomic_write(directory / "model.safetensors", lambda p: save_file(state, str(p)))
    _atomic_write(directory / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))


def read_config(directory: str | Path) -> dict:
    """Read a component's config.json, with one-line errors for missing or corrupt files."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise WeightsError(f"no config.json in {str(directory)!r}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path} is not valid JSON: {e}") from None


def load_state(directory: str | Path) -> dict[str, torch.Tensor]:
    """Read model.safetensors of a component directory."""
    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise WeightsError(f"no model.safetensors in {str(directory)!r}")
    try:
        # clone: fresh, aligned memory (mmap views can take other BLAS paths, costing bit-exactness)
        # float32 everywhere (weights stored in half precision are upcast)
        return {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone()
                for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path} is corrupt: {e}") from None


def load_pretrained(cls: type[M], config_cls: type, directory: str | Path,
                    build: Mapping[str, Any] | None = None, **overrides: Any) -> M:
    """Build `cls(config, **build)` on the meta device and assign the saved tensors to it.

    `build`: constructor arguments that are not part of the saved config (e.g. the DiT's
    attention backend, a choice for the machine); `overrides`: config fields to change.
    """
    data = read_config(directory)
    data.pop("class", None)
    extra = {k: data.pop(k) for k in list(data) if k.startswith("_")}
    try:
        config = from_dict(config_cls, {**data, **overrides})
    except ConfigError as e:
        raise WeightsError(f"{directory}/config.json: {e}") from None
    with torch.device("meta"):
        model = cls(config, **(build or {}))
    state = load_state(directory)
    try:
        model.load_state_dict(state, assign=True, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise WeightsError(f"{directory}: weights do not match config ({first[0] if first else e})") from None
    _materialise_buffers(model)
    model.extra_config = extra  # type: ignore[attr-defined]
    return model.eval()


def _materialise_buffers(model: nn.Module) -> None:
    """Non-persistent buffers stay on meta after loading; let modules recompute them."""
    for module in model.modules():
        reset = getattr(module, "reset_buffers", None)
        if reset is not None:
            reset()
    for name, buf in model.named_buffers():
        if buf.is_meta:
            raise WeightsError(f"buffer {name} was not restored; the module needs reset_buffers()")
