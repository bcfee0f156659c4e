"""Weights on disk: a directory per component, and the pipeline directory that holds them.

A component directory holds `config.json` + `model.safetensors`. No pickles: configs are JSON,
tensors are safetensors. Models are built on the meta device and filled with
`load_state_dict(assign=True)`, so loading never allocates random weights first.

A pipeline directory (`save_pipeline` writes it, `read_pipeline` reads it; nothing else does):

    DIR/vae/  DIR/dit/  DIR/text_encoder/   one component directory each
    DIR/pipeline.json                       version 2:
        {
          "format": "zoetrope-pipeline",
          "version": 2,
          "components": ["vae", "dit", "text_encoder"],   # the subdirectories it needs
          "diffusion": {...},              # every `DiffusionConfig` field
          "fps": 8.0,                      # frame rate of the written videos
          "default_size": [17, 64, 64],    # [frames, height, width] when none is given
          "sizes": [[17, 64, 64], ...],    # sizes seen in training (informational)
          "negative_prompt": "",           # the default unconditional prompt
          "metadata": {}                   # free-form (e.g. what trained it); kept and written back
        }

Version 1 files (the first format) are still read: "format", "version",
"sizes" and "negative_prompt" were optional there, and any other key was metadata. A newer
version than this code knows is refused.

Every write is atomic. Files go through `errors.atomic_write`; a pipeline directory is written
whole into a temporary directory beside the target and renamed into place only when complete
(`errors.atomic_write_dir`), so an interrupted save leaves the previous directory (if any) intact
and never a half-written one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ConfigError, DiffusionConfig, from_dict, to_dict
from .errors import UserError, atomic_write, atomic_write_dir, atomic_write_text

M = TypeVar("M", bound=nn.Module)


class WeightsError(UserError):
    """A weights directory is missing, incomplete or corrupt (message is one line)."""


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
    atomic_write(directory / "model.safetensors", lambda p: save_file(state, str(p)))
    atomic_write_text(directory / "config.json", json.dumps(config, indent=2))


def read_config(directory: str | Path) -> dict:
    """Read a component's config.json, with one-line errors for missing or corrupt files."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise WeightsError(f"no config.json in {str(directory)!r}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path} is not valid JSON: {e}") from None


def confined_path(directory: str | Path, path: str, label: str) -> Path:
    """`path` as a model directory's config.json names it: relative to that directory, and inside
    it (a `..` escape or an absolute path elsewhere is refused: the directory may be untrusted)."""
    root = Path(directory).resolve()
    resolved = (root / Path(path).expanduser()).resolve()  # an absolute `path` stays itself
    if resolved != root and root not in resolved.parents:
        raise WeightsError(f"{label} {path!r} in {root / 'config.json'} is outside the model "
                           f"directory; a model directory may only name files inside itself")
    return resolved


def require_safetensors(directory: str | Path) -> None:
    """Refuse a pretrained model directory without .safetensors weights: a pickle (.bin, .pt,
    .ckpt) can run code when loaded, so zoetrope never loads one."""
    directory = Path(directory)
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in directory.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    found = f" (it has {', '.join(pickles)}, pickles, which are never loaded)" if pickles else ""
    raise WeightsError(f"{directory} holds no .safetensors weights{found}; save the model with "
                       f"safetensors (e.g. save_pretrained(..., safe_serialization=True))")


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


# --------------------------------------------------------------------------------------------
# Pipeline directories
# --------------------------------------------------------------------------------------------

PIPELINE_FILE = "pipeline.json"
PIPELINE_FORMAT = "zoetrope-pipeline"
PIPELINE_VERSION = 2  # 2: every field always written, metadata nested; 1: the first format
COMPONENTS = ("vae", "dit", "text_encoder")  # subdirectories, one component each

Size = tuple[int, int, int]  # (frames, height, width) in pixels


class Saveable(Protocol):
    """A component that writes its own directory (config.json + weights)."""

    def save_pretrained(self, directory: str | Path) -> None: ...


@dataclass
class PipelineSettings:
    """Everything pipeline.json holds besides the components: the pipeline's own settings."""

    diffusion: DiffusionConfig  # objective, sampler and the sampling defaults
    fps: float  # frame rate of the written videos
    default_size: Size  # (frames, height, width) when the caller gives none
    sizes: list[Size]  # sizes seen in training (informational)
    negative_prompt: str = ""  # the default unconditional prompt of guidance
    metadata: dict[str, Any] = field(default_factory=dict)  # free-form, kept and written back


def save_pipeline(directory: str | Path, components: Mapping[str, Saveable],
                  settings: PipelineSettings) -> Path:
    """Write a complete pipeline directory atomically (`errors.atomic_write_dir`); returns it.

    The components, then pipeline.json, go into a temporary directory beside the target, which is
    renamed into place when complete: an existing pipeline directory is replaced only then.
    """
    for name in COMPONENTS:
        if not hasattr(components[name], "save_pretrained"):  # e.g. a diffusers VAE adapter
            raise WeightsError(f"a {type(components[name]).__name__} cannot be saved in a pipeline "
                               f"directory (its weights stay at their source)")
    _check_replaceable(Path(directory))
    text = json.dumps(_pipeline_json(settings), indent=2)

    def write(tmp: Path) -> None:
        for name in COMPONENTS:
            components[name].save_pretrained(tmp / name)
        (tmp / PIPELINE_FILE).write_text(text, encoding="utf-8")  # last: the directory is complete

    return atomic_write_dir(directory, write)


def _pipeline_json(settings: PipelineSettings) -> dict[str, Any]:
    """The version-2 content of pipeline.json."""
    return {"format": PIPELINE_FORMAT, "version": PIPELINE_VERSION, "components": list(COMPONENTS),
            "diffusion": to_dict(settings.diffusion), "fps": float(settings.fps),
            "default_size": list(settings.default_size),
            "sizes": [list(size) for size in settings.sizes],
            "negative_prompt": settings.negative_prompt, "metadata": dict(settings.metadata)}


def _check_replaceable(directory: Path) -> None:
    """Refuse to replace anything but a pipeline directory (or an empty one): never lose a user's
    other files to a save."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise WeightsError(f"cannot write a pipeline directory at {str(directory)!r}: it is a file")
    ours = {*COMPONENTS, PIPELINE_FILE}
    foreign = sorted(p.name for p in directory.iterdir() if p.name not in ours)
    if foreign:
        raise WeightsError(f"will not replace {str(directory)!r}: it holds {foreign[0]!r}, which "
                           f"is not part of a pipeline directory; choose a new or empty directory")


def read_pipeline(directory: str | Path) -> PipelineSettings:
    """pipeline.json of a pipeline directory (version 1 or 2) -> its settings; one-line errors."""
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsError(f"no pipeline directory at {str(directory)!r}")
    path = directory / PIPELINE_FILE
    if not path.is_file():
        raise WeightsError(f"{str(directory)!r} is not a pipeline directory: no {PIPELINE_FILE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path} must hold a JSON object")
    version = data.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise WeightsError(f"{path}: version must be a whole number >= 1, got {version!r}")
    if version > PIPELINE_VERSION:
        raise WeightsError(f"{path} has version {version}; this zoetrope reads up to "
                           f"{PIPELINE_VERSION} (upgrade zoetrope)")
    if data.get("format", PIPELINE_FORMAT) != PIPELINE_FORMAT:
        raise WeightsError(f"{path}: format {data['format']!r} is not {PIPELINE_FORMAT!r}")
    data = _from_version_1(data, path) if version == 1 else data
    settings = _settings(data, path)
    for name in data["components"]:
        if not (directory / name / "config.json").is_file():
            raise WeightsError(f"no config.json in {str(directory / name)!r}")
    return settings


def _from_version_1(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A version-1 pipeline.json as version 2: optional fields filled, other keys as metadata."""
    missing = [k for k in ("diffusion", "fps", "default_size") if k not in data]
    if missing:
        raise WeightsError(f"{path} lacks {', '.join(missing)}")
    known = {"format", "version", "diffusion", "fps", "default_size", "sizes", "negative_prompt"}
    return {"format": PIPELINE_FORMAT, "version": PIPELINE_VERSION, "components": list(COMPONENTS),
            "diffusion": data["diffusion"], "fps": data["fps"], "default_size": data["default_size"],
            "sizes": data.get("sizes", [data["default_size"]]),
            "negative_prompt": data.get("negative_prompt", ""),
            "metadata": {k: v for k, v in data.items() if k not in known}}


def _settings(data: dict[str, Any], path: Path) -> PipelineSettings:
    """Check a version-2 pipeline.json object and build its settings."""
    fields = ("format", "version", "components", "diffusion", "fps", "default_size", "sizes",
              "negative_prompt", "metadata")
    missing = [k for k in fields if k not in data]
    unknown = sorted(set(data) - set(fields))
    if missing or unknown:
        raise WeightsError(f"{path} " + (f"lacks {', '.join(missing)}" if missing else
                                         f"has unknown keys {', '.join(unknown)}"))
    try:
        diffusion = from_dict(DiffusionConfig, data["diffusion"], "diffusion")
    except ConfigError as e:
        raise WeightsError(f"{path}: {e}") from None
    fps, prompt, metadata = data["fps"], data["negative_prompt"], data["metadata"]
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0:
        raise WeightsError(f"{path}: fps must be a positive number, got {fps!r}")
    if not isinstance(prompt, str) or not isinstance(metadata, dict):
        raise WeightsError(f"{path}: negative_prompt must be a string and metadata an object")
    components = data["components"]
    if (not isinstance(data["sizes"], list) or not isinstance(components, list)
            or sorted(str(c) for c in components) != sorted(COMPONENTS)):
        raise WeightsError(f"{path}: sizes must be a list and components {list(COMPONENTS)}")
    return PipelineSettings(diffusion, float(fps), _size(data["default_size"], "default_size", path),
                            [_size(s, "sizes", path) for s in data["sizes"]], prompt, metadata)


def _size(value: Any, key: str, path: Path) -> Size:
    """A [frames, height, width] of positive whole numbers, or a one-line error naming `key`."""
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise WeightsError(f"{path}: {key} must hold [frames, height, width] of positive whole "
                           f"numbers, got {value!r}")
    return (value[0], value[1], value[2])
