"""Latent caches: a dataset encoded once through a frozen VAE, read back as training samples.

DiT training spends most of its time in the VAE encoder when it encodes every clip on the fly;
a cache pays that once. `encode_dataset` encodes samples 0..count-1 of any index-addressable
dataset (`sample(index) -> (frames uint8 (T, H, W, 3), caption)`) and `LatentCache` serves
them back as `sample(index) -> (latent float (C, t, h, w), caption)`, with the same indices.

Layout of a cache directory:
- `cache.json`: the manifest: format version, the VAE config (latents are only meaningful with
  the VAE that decodes them, scaling included), the dataset's description, count, shard size,
  dtype and, once finished, the sizes found. Written at the
  start (so a rerun can check it is continuing the same cache) and again, complete, at the end.
- `shard_00000.safetensors`: the shard's latents flattened and concatenated into one tensor
  `latents` and their shapes `shapes` (N, 4) int64 (C, t, h, w). (Caches made by earlier
  versions may also hold text embeddings; nothing reads them: the DiT task encodes captions.)
- `shard_00000.json`: the shard's indices, captions, pixel sizes and latent shapes.

Every file is written to a temporary name and renamed into place, the JSON after the tensors, so
a shard whose JSON exists is complete. A rerun skips complete shards: an interrupted encode
continues where it stopped, and a larger `count` extends the cache.
"""

from __future__ import annotations

import json
import math
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from ..errors import UserError, atomic_write

FORMAT = 1  # bump when the layout changes
MANIFEST = "cache.json"
SHARD_SIZE = 256  # samples per shard: a few hundred MB of latents for 17x256x256 clips
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Dataset attributes that decide which samples an index gives; a cache records them.
_DESCRIBED = ("sizes", "seed", "fps", "two_objects", "root", "listing")


class CacheError(UserError):
    """A cache directory is incomplete, corrupt or was made differently (message is one line)."""


def shard_name(shard: int) -> str:
    return f"shard_{shard:05d}"


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CacheError(f"cannot read {path}: {e}") from None


def describe(dataset) -> dict:
    """What identifies a dataset's samples: its class and seed, sizes, fps, root... (JSON-able)."""
    found = {name: getattr(dataset, name) for name in _DESCRIBED if hasattr(dataset, name)}
    return json.loads(json.dumps({"class": type(dataset).__name__, **found}, default=str))


def _differences(saved: dict, current: dict) -> list[str]:
    return [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


def _start_manifest(out: Path, manifest: dict) -> None:
    """Check that an existing cache was made the same way (count may differ), then write ours.

    A cache with no finished shard holds nothing to protect, so it may start again differently."""
    path = out / MANIFEST
    if path.is_file() and any(out.glob("shard_*.json")):
        saved = _read_json(path)
        for key, what in (("vae", "another VAE"), ("dataset", "another dataset")):
            diff = _differences(saved.get(key) or {}, manifest[key] or {})
            if diff:
                raise CacheError(f"cache {str(out)!r} was made with {what} (differs in "
                                 f"{', '.join(diff[:4])}); use a new output directory")
        for key in ("format", "shard_size", "dtype"):
            if saved.get(key) != manifest[key]:
                raise CacheError(f"cache {str(out)!r} was made with {key}={saved.get(key)!r}, "
                                 f"not {manifest[key]!r}; use a new output directory")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, manifest)


def _shard_done(out: Path, shard: int, indices: list[int]) -> bool:
    """A shard is done when its JSON (written last) lists exactly the wanted indices."""
    meta, tensors = out / f"{shard_name(shard)}.json", out / f"{shard_name(shard)}.safetensors"
    if not meta.is_file() or not tensors.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("indices") == indices
    except (OSError, json.JSONDecodeError):
        return False  # a damaged shard is simply encoded again


@torch.no_grad()
def _encode_shard(dataset, vae, indices: list[int], batch_size: int,
                  dtype: torch.dtype, bar: tqdm) -> tuple[dict, dict]:
    """Encode the samples `indices`; returns (tensors, metadata) of the shard."""
    device = next(vae.parameters()).device
    latents: dict[int, Tensor] = {}
    captions: dict[int, str] = {}
    sizes: dict[int, list[int]] = {}
    pending: dict[tuple, list[tuple[int, Tensor]]] = {}  # clip size -> samples waiting for a batch

    def flush(size: tuple) -> None:
        group = pending.pop(size)
        video = torch.stack([frames for _, frames in group]).to(device)  # (B, T, H, W, 3)
        video = video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (B, 3, T, H, W) in [-1, 1]
        z = vae.encode_latent(video).to("cpu", dtype)  # (B, C, t, h, w)
        for (index, _), latent in zip(group, z):
            latents[index] = latent
        bar.update(len(group))

    for index in indices:
        frames, caption = dataset.sample(index)
        frames = torch.as_tensor(frames)
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise CacheError(f"sample {index} is not uint8 frames (T, H, W, 3): "
                             f"{frames.dtype} {tuple(frames.shape)}")
        captions[index], sizes[index] = caption, list(frames.shape[:3])
        pending.setdefault(tuple(frames.shape), []).append((index, frames))
        if len(pending[tuple(frames.shape)]) == batch_size:
            flush(tuple(frames.shape))
    for size in list(pending):
        flush(size)

    ordered = [latents[i] for i in indices]
    tensors = {"latents": torch.cat([z.flatten() for z in ordered]),
               "shapes": torch.tensor([list(z.shape) for z in ordered], dtype=torch.int64)}
    meta = {"indices": indices, "captions": [captions[i] for i in indices],
            "sizes": [sizes[i] for i in indices], "shapes": tensors["shapes"].tolist()}
    return tensors, meta


def _write_shard(out: Path, shard: int, tensors: dict, meta: dict) -> None:
    """Write a shard's tensors, then its JSON: the JSON's presence marks the shard complete."""
    name = shard_name(shard)
    atomic_write(out / f"{name}.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    _write_json(out / f"{name}.json", meta)


def encode_dataset(dataset, vae, out_dir: str | Path, count: int, batch_size: int = 8, shard_size: int = SHARD_SIZE, dtype: str = "float32",
                   progress: bool = True) -> Path:
    """Encode samples 0..count-1 of `dataset` through `vae` into a cache at `out_dir` (resumable).

    Clips of equal size are encoded together, `batch_size` at a time. Returns `out_dir`.
    """
    out = Path(out_dir)
    if count < 1:
        raise UserError(f"count must be at least 1, got {count}")
    if batch_size < 1 or shard_size < 1:
        raise UserError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    from ..config import to_dict
    manifest: dict[str, Any] = {
        "format": FORMAT, "complete": False, "count": count, "shard_size": shard_size,
        "dtype": dtype, "vae": {"class": type(vae).__name__, **to_dict(vae.config)},
        "dataset": describe(dataset),
    }
    _start_manifest(out, manifest)
    vae.eval()
    shards = math.ceil(count / shard_size)
    sizes: dict[tuple, int] = {}
    with tqdm(total=count, desc="encode", unit="clip", disable=not progress,
              dynamic_ncols=True) as bar:
        for shard in range(shards):
            indices = list(range(shard * shard_size, min(count, (shard + 1) * shard_size)))
            if _shard_done(out, shard, indices):
                meta = _read_json(out / f"{shard_name(shard)}.json")
                bar.update(len(indices))
            else:
                tensors, meta = _encode_shard(dataset, vae, indices, batch_size, DTYPES[dtype], bar)
                _write_shard(out, shard, tensors, meta)
            for size in meta["sizes"]:
                sizes[tuple(size)] = sizes.get(tuple(size), 0) + 1
    manifest.update(complete=True, shards=shards,
                    sizes=[{"size": list(size), "count": n} for size, n in sorted(sizes.items())])
    _write_json(out / MANIFEST, manifest)
    return out


class LatentCache:
    """A finished cache as a dataset: `sample(index) -> (latent float (C, t, h, w), caption)`.

    Indices wrap around (index modulo count), like an infinite stream of epochs. Tensors are read
    lazily from the memory-mapped shard, one sample at a time.
    """

    is_latent = True  # samples are VAE latents, not frames: trainers skip the VAE

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise CacheError(f"no latent cache at {str(self.root)!r} (no {MANIFEST}); "
                             f"make one with `zoetrope encode`")
        self.manifest = _read_json(path)
        if self.manifest.get("format") != FORMAT:
            raise CacheError(f"cache {str(self.root)!r} has format {self.manifest.get('format')!r};"
                             f" this version reads format {FORMAT}")
        if not self.manifest.get("complete"):
            raise CacheError(f"cache {str(self.root)!r} is incomplete; rerun the same "
                             f"`zoetrope encode` command to finish it")
        self.count, self.shard_size = self.manifest["count"], self.manifest["shard_size"]
        self.captions: list[str] = []
        self.shapes: list[tuple[int, ...]] = []
        for shard in range(math.ceil(self.count / self.shard_size)):
            meta = _read_json(self.root / f"{shard_name(shard)}.json")
            wanted = min(self.shard_size, self.count - shard * self.shard_size)
            if len(meta["indices"]) != wanted:
                raise CacheError(f"{shard_name(shard)}.json in {str(self.root)!r} holds "
                                 f"{len(meta['indices'])} samples, expected {wanted}")
            self.captions += meta["captions"]
            self.shapes += [tuple(s) for s in meta["shapes"]]
        self._offsets: dict[int, list[int]] = {}  # shard -> start of each sample in `latents`

    @property
    def vae_config(self) -> dict:
        """The config of the VAE the cache was encoded with (as in its config.json)."""
        return self.manifest["vae"]

    @property
    def latent_channels(self) -> int:
        return int(self.shapes[0][0])

    @property
    def sizes(self) -> list[tuple[int, int, int]]:
        """The distinct pixel sizes (frames, height, width) the cache holds."""
        return [tuple(s["size"]) for s in self.manifest["sizes"]]

    def __len__(self) -> int:
        return self.count

    def _locate(self, index: int) -> tuple[Path, int, int]:
        """(shard file, shard number, position in the shard) of sample `index` (wrapped)."""
        index %= self.count
        shard, position = divmod(index, self.shard_size)
        return self.root / f"{shard_name(shard)}.safetensors", shard, position

    def _read(self, path: Path, name: str, start: int, stop: int) -> Tensor:
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_slice(name)[start:stop]
        except (OSError, ValueError, RuntimeError) as e:  # missing or corrupt shard
            raise CacheError(f"cannot read {name} from {path}: {e}") from None

    def sample(self, index: int) -> tuple[Tensor, str]:
        """Sample `index` modulo len: (latent float32 (C, t, h, w), caption)."""
        path, shard, position = self._locate(index)
        if shard not in self._offsets:
            first = shard * self.shard_size
            sizes = [math.prod(s) for s in self.shapes[first:first + self.shard_size]]
            self._offsets[shard] = [0, *accumulate(sizes)]
        start = self._offsets[shard][position]
        shape = self.shapes[index % self.count]
        flat = self._read(path, "latents", start, start + math.prod(shape))
        return flat.float().reshape(shape), self.captions[index % self.count]
