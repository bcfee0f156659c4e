"""Moving MNIST with text: one MNIST digit sliding and bouncing on black, captioned.

Specification (shared with the shapes world, see `shapes.py`, for the motion):
- Background black; the digit's 28 x 28 MNIST image is resized (antialiased) to a square box
  `size = max(4, round(0.4 * min(H, W)))` pixels across and drawn as grey replicated to RGB
  (pixel value = resized MNIST intensity), so the digit is white-ish on black.
- The box moves `left`, `right`, `up` or `down` at constant speed with elastic bounces, exactly as
  `shapes.bouncing_centers` (speed in `shapes.SPEED_RANGE` x extent px/frame, no bounce before
  frame `shapes.free_steps(T)`, box always fully inside the frame).
- Caption: exactly `the digit {d} moving {direction}`.

Data: the MNIST idx files (e.g. `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`) in a
folder. Without an explicit path, `find_mnist` tries `../shared/data/mnist` relative to the
working directory, then relative to this repository's root.
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .shapes import DIRECTIONS, ProceduralWorld, bouncing_centers

# Where the shared data lives relative to a working directory or the repository root.
_RELATIVE = Path("..") / "shared" / "data" / "mnist"


@dataclass
class MnistClip:
    """A rendered Moving-MNIST clip: frames uint8 (T, H, W, 3) and what it shows."""

    frames: np.ndarray
    caption: str
    digit: int
    direction: str
    index: int  # which MNIST image was drawn
    size: int  # pixels across the digit's square box
    centers: np.ndarray  # float (T, 2): box centre (x, y) per frame


def find_mnist(root: str | Path | None = None) -> Path:
    """Return the MNIST folder: `root` if given, else `../shared/data/mnist` from cwd or repo."""
    if root is not None:
        candidates = [Path(root)]
    else:
        repo = Path(__file__).resolve().parents[3]  # src/zoetrope/data/mnist.py -> repo root
        candidates = [Path.cwd() / _RELATIVE, repo / _RELATIVE]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*images-idx3-ubyte*")):
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no MNIST idx files (*images-idx3-ubyte*) found in: {tried}")


def _read_idx(path: Path, offset: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


@functools.lru_cache(maxsize=4)
def load_mnist(root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load (images uint8 (N, 28, 28), labels uint8 (N,)) from an MNIST folder (cached)."""
    folder = find_mnist(root)
    # Prefer the test split (that is what ../shared ships); any split with both files works.
    splits = sorted(folder.glob("*images-idx3-ubyte*"), key=lambda p: "t10k" not in p.name)
    for images_path in splits:
        labels_path = images_path.with_name(images_path.name.replace("images-idx3", "labels-idx1"))
        if labels_path.exists():
            images = _read_idx(images_path, offset=16).reshape(-1, 28, 28)  # 16-byte idx3 header
            labels = _read_idx(labels_path, offset=8)  # 8-byte idx1 header
            if len(images) != len(labels):
                raise UserError(f"{images_path.name} and {labels_path.name} differ in length")
            return images, labels
    raise FileNotFoundError(f"MNIST folder {str(folder)!r} has images but no matching labels file")


def _resize_digit(image: np.ndarray, size: int) -> np.ndarray:
    # torch.tensor copies: the loaded idx buffer is read-only.
    x = torch.tensor(image, dtype=torch.float32)[None, None]  # (1, 1, 28, 28)
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y[0, 0].round().clamp(0, 255).byte().numpy()


def render_clip(frames: int, height: int, width: int, digit: int | None = None,
                direction: str | None = None, seed: int = 0,
                root: str | Path | None = None) -> MnistClip:
    """Render a Moving-MNIST clip; unspecified digit, direction and image come from `seed`."""
    if frames < 1 or height < 4 or width < 4:
        raise UserError(f"need frames >= 1 and height, width >= 4; got {(frames, height, width)}")
    if digit is not None and digit not in range(10):
        raise UserError(f"digit must be 0..9, got {digit!r}")
    if direction is not None and direction not in DIRECTIONS:
        raise UserError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    images, labels = load_mnist(None if root is None else str(root))
    rng = np.random.default_rng(seed)
    digit = int(rng.integers(10)) if digit is None else digit
    direction = direction or DIRECTIONS[rng.integers(len(DIRECTIONS))]
    candidates = np.flatnonzero(labels == digit)
    index = int(candidates[rng.integers(len(candidates))])
    size = min(height, width, max(4, round(0.4 * min(height, width))))
    sprite = _resize_digit(images[index], size)  # (size, size)
    centers = bouncing_centers(rng, frames, height, width, size, direction)
    video = np.zeros((frames, height, width), np.uint8)
    for t, (cx, cy) in enumerate(centers):
        # Whole-pixel placement keeps the digit's strokes sharp; the centre is kept exact.
        left, top = int(round(cx - size / 2)), int(round(cy - size / 2))
        video[t, top:top + size, left:left + size] = sprite
    frames_rgb = np.repeat(video[..., None], 3, axis=-1)  # grey replicated to RGB
    return MnistClip(frames=frames_rgb, caption=f"the digit {digit} moving {direction}",
                     digit=digit, direction=direction, index=index, size=size, centers=centers)


class MovingMNIST(ProceduralWorld):
    """Moving MNIST as an infinite dataset of (frames uint8 torch (T, H, W, 3), caption)."""

    def __init__(self, root: str | Path | None = None,
                 sizes: list[tuple[int, int, int]] | None = None, seed: int = 0) -> None:
        super().__init__(sizes, seed)
        self.root = str(find_mnist(root))  # fail at construction, not inside a worker
        load_mnist(self.root)

    def clip(self, index: int) -> MnistClip:
        """The full `MnistClip` behind sample `index`."""
        rng, (t, h, w) = self._rng(index)
        return render_clip(t, h, w, seed=int(rng.integers(2**63)), root=self.root)

    def sample(self, index: int) -> tuple[torch.Tensor, str]:
        """Sample `index` of the stream (deterministic): (frames uint8 (T, H, W, 3), caption)."""
        clip = self.clip(index)
        return torch.from_numpy(clip.frames), clip.caption
