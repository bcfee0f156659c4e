"""Training checkpoints that cannot be lost, and restore a run bit-exactly.

A checkpoint is a directory `RUN_DIR/checkpoints/step_00000100/` holding

    model.safetensors      full (unsharded) weights of the trained modules
    ema.safetensors        their exponential moving average
    optimizer.safetensors  optimizer tensors (flattened as `state/<param>/<key>`)
    rng_rank<R>.safetensors  torch random states of rank R (Python's and NumPy's are in state.json)
    state.json             step, samples consumed, optimizer hyper-parameters, RNG states

It is written with `errors.atomic_write_dir`: into `.step_....tmp-XXXX` beside it, renamed into
place only when complete, so a crash, a full disk or SIGKILL while saving leaves the previous
checkpoint intact; `state.json` is the last file written. Only the newest `keep` checkpoints are
kept. No pickles: tensors are safetensors, the rest is JSON.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .errors import UserError, atomic_write_dir

PREFIX = "step_"


class CheckpointError(UserError):
    """Saving or loading a checkpoint failed (message is one line)."""


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a directory counts once its state.json exists)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def clean_partial(run_dir: Path) -> None:
    """Remove what a save killed midway left (`atomic_write_dir`'s `.step_*.tmp-*` / `.old-*`)."""
    root = checkpoint_dir(run_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(f".{PREFIX}") and (".tmp-" in p.name or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)


# ---- random states --------------------------------------------------------------------------


def rng_state() -> tuple[dict[str, Tensor], dict]:
    """(tensors, json) describing every global random generator of this process."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {"python": [version, list(internal), gauss],
                     "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def set_rng_state(tensors: dict[str, Tensor], data: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = data["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---- optimizer state ------------------------------------------------------------------------


def flatten_optimizer(state: dict) -> tuple[dict[str, Tensor], dict]:
    """A full optimizer state dict keyed by parameter names -> (tensors, json)."""
    tensors, scalars = {}, {}
    for name, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"state/{name}/{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{name}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Tensor], data: dict) -> dict:
    state: dict[str, dict] = {}
    for flat, value in tensors.items():
        _, rest = flat.split("/", 1)
        name, key = rest.rsplit("/", 1)
        state.setdefault(name, {})[key] = value
    for flat, value in data["scalars"].items():
        name, key = flat.rsplit("/", 1)
        state.setdefault(name, {})[key] = value
    return {"state": state, "param_groups": data["param_groups"]}


# ---- save / load ----------------------------------------------------------------------------


def save_checkpoint(run_dir: Path, step: int, model: dict[str, Tensor], ema: dict[str, Tensor],
                    optimizer: dict, state: dict, keep: int,
                    rngs: list[tuple[dict[str, Tensor], dict]] | None = None) -> Path:
    """Write a checkpoint atomically and prune old ones; `rngs[r]` is rank r's random state."""
    final = checkpoint_dir(run_dir) / f"{PREFIX}{step:08d}"
    rngs = rngs or [rng_state()]

    def write(tmp: Path) -> None:
        for rank, (tensors, _) in enumerate(rngs):
            save_file(tensors, str(tmp / f"rng_rank{rank}.safetensors"))
        save_file({k: v.contiguous() for k, v in model.items()}, str(tmp / "model.safetensors"))
        save_file({k: v.contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
        opt_tensors, opt_json = flatten_optimizer(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        full_state = {**state, "step": step, "optimizer": opt_json, "rng": [data for _, data in rngs]}
        (tmp / "state.json").write_text(json.dumps(full_state))  # last: marks the checkpoint complete

    try:
        atomic_write_dir(final, write)  # a directory-level atomic write: all files or none
    except OSError as e:
        previous = latest_checkpoint(run_dir)
        kept = f"; the previous checkpoint {previous} is intact" if previous else ""
        raise CheckpointError(f"could not save the checkpoint of step {step}: {e.strerror or e}{kept}") from None
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, rank: int = 0) -> dict:
    """Read a checkpoint: model, ema, optimizer (full state dict), state, and restore RNG."""
    try:
        state = json.loads((path / "state.json").read_text())
        model = _load(path / "model.safetensors")
        ema = _load(path / "ema.safetensors")
        optimizer = unflatten_optimizer(_load(path / "optimizer.safetensors"), state["optimizer"])
        rngs = state.get("rng", [])
        if rank < len(rngs) and (path / f"rng_rank{rank}.safetensors").is_file():
            set_rng_state(_load(path / f"rng_rank{rank}.safetensors"), rngs[rank])
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable: {e}") from None
    return {"model": model, "ema": ema, "optimizer": optimizer, "state": state}


def _load(path: Path) -> dict[str, Tensor]:
    # clone: fresh aligned memory, so math on restored tensors is bit-identical to the original
    return {k: v.clone() for k, v in load_file(str(path)).items()}
