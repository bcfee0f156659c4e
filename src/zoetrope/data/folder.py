"""Caption folders: a user's own clips with their captions, as a map-style dataset.

Layout: a directory of video files (anything PyAV decodes: mp4, avi, webm, mov, mkv, gif) with
either `captions.jsonl` holding one `{"video": FILE, "caption": TEXT}` record per line (FILE
relative to the folder), or, when there is no such file, a `.txt` caption beside each clip with
the same stem (`clip.mp4` + `clip.txt`).

At construction every clip's header is probed (PyAV open + video stream check); a file that
fails, a clip without a caption (a video file `captions.jsonl` does not list, or no `.txt`
beside it) and an empty caption are skipped with a warning naming the file and recorded in
`dataset.skipped` as (path, reason). `CaptionFolder[i]` replaces a clip that later fails to
decode by the next good one (and says so); `IndexedFolder`, which training and `zoetrope
encode` read, never does: a sample is never silently replaced by another, so a clip that fails
to decode there is an error naming the sample and the file.

Items are (frames uint8 torch (T, H, W, 3), caption). With `num_frames`, a clip shorter than that
is padded by holding its last frame, so every item has exactly `num_frames` frames.

`IndexedFolder` is the training view of a caption folder: `sample(index)` for any index >= 0,
deterministic per index (clip order, size and start time all derive from (seed, index)), so
resumed and multi-process runs read exactly the same data as one uninterrupted process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..log import warn
from .video import VideoError, probe_video, read_video

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".m4v", ".gif")


@dataclass
class FolderItem:
    """One clip of a caption folder, with the header facts the probe found."""

    path: Path
    caption: str
    frames: int  # frame count the container declares (0 when it does not say)
    height: int
    width: int
    fps: float


class CaptionFolder(Dataset):
    """A folder of captioned clips; yields (frames uint8 (T, H, W, 3), caption)."""

    def __init__(self, root: str | Path, num_frames: int | None = None,
                 size: tuple[int, int] | None = None, fps: float | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"caption folder {str(self.root)!r} does not exist")
        self.num_frames, self.size, self.fps = num_frames, size, fps
        self.skipped: list[tuple[str, str]] = []
        self.items: list[FolderItem] = []
        for path, caption in self._listing():
            try:
                info = probe_video(path)
            except VideoError as e:
                self._skip(path, str(e))
                continue
            self.items.append(FolderItem(path=path, caption=caption, **info))
        if not self.items:
            raise UserError(f"caption folder {str(self.root)!r} has no readable captioned clips "
                             f"({len(self.skipped)} skipped)")

    def _skip(self, path: Path | str, reason: str) -> None:
        self.skipped.append((str(path), reason))
        warn(f"skipping {path}: {reason}")

    def _listing(self) -> list[tuple[Path, str]]:
        """(video path, caption) pairs from captions.jsonl, or from .txt files beside clips."""
        index = self.root / "captions.jsonl"
        pairs = []
        if index.is_file():
            for number, line in enumerate(index.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    video, caption = record["video"], record["caption"]
                    if not isinstance(video, str) or not isinstance(caption, str):
                        raise TypeError("'video' and 'caption' must be strings")
                except (ValueError, KeyError, TypeError) as e:
                    self._skip(f"{index}:{number}", f"bad record ({type(e).__name__}: {e})")
                    continue
                path = self.root / video
                if not path.is_file():
                    self._skip(path, "file listed in captions.jsonl does not exist")
                elif not caption.strip():
                    self._skip(path, f"empty caption in {index.name} line {number}")
                else:
                    pairs.append((path, caption))
            self._skip_unlisted({path.resolve() for path, _ in pairs})
            return pairs
        for path in sorted(self.root.iterdir()):
            if path.suffix.lower() not in VIDEO_EXTENSIONS or not path.is_file():
                continue
            text = path.with_suffix(".txt")
            caption = text.read_text().strip() if text.is_file() else None
            if caption is None:
                self._skip(path, f"no caption file {text.name}")
            elif not caption:
                self._skip(path, f"empty caption in {text.name}")
            else:
                pairs.append((path, caption))
        return pairs

    def _skip_unlisted(self, listed: set[Path]) -> None:
        """Report the video files of the folder that captions.jsonl does not list."""
        for path in sorted(self.root.iterdir()):
            if path.suffix.lower() in VIDEO_EXTENSIONS and path.resolve() not in listed \
                    and path.is_file() and str(path) not in {p for p, _ in self.skipped}:
                self._skip(path, "not listed in captions.jsonl")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[torch.Tensor, str]:
        """Decode item `index` as configured; raises VideoError if the file turns out bad."""
        item = self.items[index]
        frames, _ = read_video(item.path, num_frames=self.num_frames, fps=self.fps, size=self.size)
        if self.num_frames is not None and len(frames) < self.num_frames:
            # Hold the last frame: a fixed length keeps batches uniform; short clips just end.
            hold = np.repeat(frames[-1:], self.num_frames - len(frames), axis=0)
            frames = np.concatenate([frames, hold])
        return torch.from_numpy(frames), item.caption

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        """Item `index`, or the next good item after it when that file fails to decode."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        bad = {path for path, _ in self.skipped}
        for step in range(len(self)):
            item = self.items[(index + step) % len(self)]
            if str(item.path) in bad:
                continue
            try:
                return self.load((index + step) % len(self))
            except VideoError as e:
                self._skip(item.path, str(e))
                bad.add(str(item.path))
        raise VideoError(f"no clip in {str(self.root)!r} could be decoded "
                         f"({len(self.skipped)} skipped)")


# A third seed word keeps the per-epoch permutation streams apart from the per-index streams.
_PERMUTATION_STREAM = 1


class IndexedFolder:
    """A caption folder as an index-addressable training stream of variable-size clips.

    Sample `index` is clip `permutation(epoch)[index % len]` with epoch = index // len, so every
    epoch visits every clip once in a seeded order. Its (frames, height, width) is drawn from
    `sizes` and its start time uniformly from the part of the clip where that many frames fit,
    both from a generator seeded with (seed, index). Frames are read at `fps` (None: the clip's
    own rate), resized and centre-cropped to the size, and padded by holding the last frame when
    the clip is too short. A clip that fails to decode is never replaced by another: the sample
    is a VideoError naming its index and the file (recorded in `skipped`).
    """

    def __init__(self, root: str | Path, sizes: list[tuple[int, int, int]] | None = None,
                 fps: float | None = None, seed: int = 0) -> None:
        self.folder = CaptionFolder(root)
        self.root = self.folder.root
        self.sizes = [tuple(int(v) for v in s) for s in (sizes or [(17, 64, 64)])]
        for s in self.sizes:
            if len(s) != 3 or min(s) < 1:
                raise UserError(f"sizes must be positive (frames, height, width) triples, got {s}")
        if fps is not None and fps <= 0:
            raise UserError(f"fps must be > 0 (or None for each clip's own rate), got {fps}")
        self.fps, self.seed = fps, seed
        self._permutation: tuple[int, np.ndarray] | None = None  # (epoch, order) of the last epoch

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every file skipped so far."""
        return self.folder.skipped

    def __len__(self) -> int:
        return len(self.folder)

    @property
    def listing(self) -> str:
        """A digest of the clips and captions, in order: which clip an index reads depends on it."""
        names = "\n".join(f"{item.path.relative_to(self.root)}\t{item.caption}"
                          for item in self.folder.items)
        return hashlib.sha256(names.encode()).hexdigest()[:16]

    def _order(self, epoch: int) -> np.ndarray:
        """The seeded clip order of `epoch` (the last one is kept: indices mostly ascend)."""
        if self._permutation is None or self._permutation[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, _PERMUTATION_STREAM])
            self._permutation = (epoch, rng.permutation(len(self)))
        return self._permutation[1]

    def clip_index(self, index: int) -> int:
        """Which clip of the folder sample `index` reads (unless that clip fails to decode)."""
        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        epoch, position = divmod(index, len(self))
        return int(self._order(epoch)[position])

    def sample(self, index: int) -> tuple[torch.Tensor, str]:
        """Sample `index` (deterministic): (frames uint8 (T, H, W, 3), caption)."""
        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        frames, height, width = self.sizes[rng.integers(len(self.sizes))]
        offset = rng.uniform()  # where in the clip's free time the sample starts, in [0, 1)
        item = self.folder.items[self.clip_index(index)]
        try:
            return self._read(item, frames, height, width, offset)
        except VideoError as e:
            if str(item.path) not in {path for path, _ in self.skipped}:
                self.skipped.append((str(item.path), str(e)))
            raise VideoError(f"sample {index}: {e}; fix or remove {item.path.name} (a sample is "
                             f"never replaced by another clip)") from None

    def _read(self, item: FolderItem, frames: int, height: int, width: int,
              offset: float) -> tuple[torch.Tensor, str]:
        """`frames` frames of `item` at (height, width), starting `offset` into its free time."""
        fps = self.fps or item.fps
        duration = item.frames / item.fps if item.frames else 0.0  # 0: length unknown
        start = offset * max(0.0, duration - frames / fps)  # the last frame is shown for 1 / fps
        clip, _ = read_video(item.path, num_frames=frames, fps=self.fps, start=start,
                             size=(height, width))
        if len(clip) < frames:
            clip = np.concatenate([clip, np.repeat(clip[-1:], frames - len(clip), axis=0)])
        return torch.from_numpy(clip), item.caption
