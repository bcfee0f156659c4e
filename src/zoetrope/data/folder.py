"""Caption folders: a user's own clips with their captions, as a map-style dataset.

Layout: a directory of video files (anything PyAV decodes: mp4, avi, webm, mov, mkv, gif) with
either `captions.jsonl` holding one `{"video": FILE, "caption": TEXT}` record per line (FILE
relative to the folder), or, when there is no such file, a `.txt` caption beside each clip with
the same stem (`clip.mp4` + `clip.txt`).

Bad data never crashes a run: at construction every clip's header is probed (PyAV open + video
stream check), and a file that fails then, or later while decoding (truncated, corrupt, no
frames), is skipped with a warning naming it and recorded in `dataset.skipped` as
(path, reason). A failing item at load time is replaced by the next good one.

Items are (frames uint8 torch (T, H, W, 3), caption). With `num_frames`, a clip shorter than that
is padded by holding its last frame, so every item has exactly `num_frames` frames.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

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
            raise ValueError(f"caption folder {str(self.root)!r} has no readable captioned clips "
                             f"({len(self.skipped)} skipped)")

    def _skip(self, path: Path | str, reason: str) -> None:
        self.skipped.append((str(path), reason))
        warnings.warn(f"skipping {path}: {reason}", stacklevel=3)

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
                    continue
                pairs.append((path, caption))
            return pairs
        for path in sorted(self.root.iterdir()):
            if path.suffix.lower() not in VIDEO_EXTENSIONS or not path.is_file():
                continue
            text = path.with_suffix(".txt")
            if not text.is_file():
                self._skip(path, f"no caption file {text.name}")
                continue
            pairs.append((path, text.read_text().strip()))
        return pairs

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
