"""Data: video I/O (PyAV), procedural worlds, caption folders and variable-size sampling.

Frames are uint8 (T, H, W, 3) RGB at every edge of this package (numpy from functions, torch
from datasets); datasets yield (frames, caption) pairs.
"""

from .folder import CaptionFolder, FolderItem
from .mnist import MnistClip, MovingMNIST, find_mnist, load_mnist
from .sampling import aspect_sizes, fit_to_budget
from .shapes import COLORS, DIRECTIONS, SHAPES, ShapeObject, ShapesClip, ShapesWorld, render_clip
from .video import (VideoError, probe_video, read_video, resize_crop, write_png,
                    write_video)

__all__ = [
    "COLORS", "DIRECTIONS", "SHAPES", "CaptionFolder", "FolderItem", "MnistClip", "MovingMNIST",
    "ShapeObject", "ShapesClip", "ShapesWorld", "VideoError", "aspect_sizes", "find_mnist",
    "fit_to_budget", "load_mnist", "probe_video", "read_video", "render_clip", "resize_crop",
    "write_png", "write_video",
]
