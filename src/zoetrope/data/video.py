"""Video files in and out (PyAV), plus the resize-and-crop every dataset uses.

Conventions: frames are uint8 numpy arrays of shape (T, H, W, 3), RGB, at the I/O edges; a still
image is (H, W, 3). Times are seconds from the first decoded frame (streams whose first timestamp
is not zero are shifted). Every user-facing failure (a file that cannot be opened, has no video
stream, or decodes to zero frames) raises `VideoError`, a `UserError` with a one-line message.

Writing picks the format from the file extension: `.mp4` (H.264, yuv420p, playable everywhere),
`.webm` (VP9), `.gif` (one 256-colour palette for the whole clip) and `.png` (one
horizontal strip of all frames). Files are written through `errors.atomic_write` (a temporary name
in the target directory, renamed into place), so an error never leaves a half-written file behind.
"""

from __future__ import annotations

import math
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError, atomic_write

SUPPORTED_WRITE = (".mp4", ".webm", ".gif", ".png")

# Frames resized per interpolate call: bounds the float32 working memory for long clips.
_RESIZE_CHUNK = 16


class VideoError(UserError):
    """A video file cannot be read or written (message is one line)."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _native_fps(stream: av.video.stream.VideoStream) -> float:
    """Frame rate the container declares; 25 when it declares none (rare, e.g. raw streams)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return 25.0


def _decode(path: Path, start: float, stop_after: float | None, limit: int | None):
    """Decode frames with time >= start (half a frame of slack); return (frames, times, fps).

    Frames stay PyAV frames: only the ones finally selected pay for the RGB conversion.
    """
    container = _open(path)
    frames: list[av.VideoFrame] = []
    times: list[float] = []
    with container:
        if not container.streams.video:
            raise VideoError(f"file {str(path)!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decoding dominates load time for real clips
        fps = _native_fps(stream)
        first: float | None = None
        decoded, reached_end = 0, True
        try:
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                t = frame.time if frame.time is not None else index / fps
                first = t if first is None else first
                t -= first
                if t < start - 0.5 / fps:
                    continue
                frames.append(frame)
                times.append(t)
                if (limit is not None and len(frames) >= limit) or (
                        stop_after is not None and t > stop_after):
                    reached_end = False
                    break
        except (av.FFmpegError, OSError) as e:
            if not frames:
                raise VideoError(f"cannot decode video {str(path)!r}: {_one_line(e)}") from None
            raise VideoError(f"video {str(path)!r} is truncated or corrupt after "
                             f"{decoded} frames: {_one_line(e)}") from None
        # FFmpeg ends a cut-off file quietly; the header's frame count (when it has one) shows
        # it. Two frames of slack absorb edit-list rounding in otherwise fine files.
        declared = int(stream.frames or 0)
        if reached_end and declared and decoded < declared - 2:
            raise VideoError(f"video {str(path)!r} is truncated: decoded {decoded} of "
                             f"{declared} frames")
    if not frames:
        detail = f" after {start:g} s" if start > 0 else ""
        raise VideoError(f"video {str(path)!r} has no frames{detail}")
    return frames, np.asarray(times), fps


def _open(path: Path) -> av.container.InputContainer:
    """Open a file for reading, turning every failure into a one-line VideoError."""
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError(f"video {str(path)!r} is an empty file")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"cannot open video {str(path)!r}: {_one_line(e)}") from None


def _one_line(error: Exception) -> str:
    """An exception's message on one line, without FFmpeg's errno and repeated file name."""
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split()) or type(error).__name__


def _rgb(frames: list[av.VideoFrame]) -> np.ndarray:
    return np.stack([frame.to_ndarray(format="rgb24") for frame in frames])  # (T, H, W, 3)


def read_video(
    path: str | Path,
    num_frames: int | None = None,
    fps: float | None = None,
    start: float = 0.0,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, float]:
    """Decode a video into uint8 (T, H, W, 3) frames and return them with their frame rate.

    `fps` resamples by picking, for each target time start + i / fps, the decoded frame nearest
    in time; `num_frames` caps the count (a short clip gives fewer); `size=(H, W)` resizes and
    centre-crops with `resize_crop`.
    """
    path = Path(path)
    if num_frames is not None and num_frames < 1:
        raise VideoError(f"num_frames must be >= 1, got {num_frames}")
    if fps is not None and fps <= 0:
        raise VideoError(f"fps must be > 0, got {fps}")
    if fps is None:
        frames, _, native = _decode(path, start, None, num_frames)
        out, out_fps = _rgb(frames), native
    else:
        # Decode just past the last target time so its nearest neighbour is known.
        stop = None if num_frames is None else start + (num_frames - 1) / fps
        frames, times, native = _decode(path, start, stop, None)
        end = times[-1] + 1.0 / native  # the last frame is shown for one native frame period
        count = max(1, math.ceil((end - start) * fps - 1e-6))
        count = count if num_frames is None else min(count, num_frames)
        targets = start + np.arange(count) / fps
        right = np.clip(np.searchsorted(times, targets), 0, len(times) - 1)
        left = np.clip(right - 1, 0, len(times) - 1)
        closer_left = np.abs(times[left] - targets) <= np.abs(times[right] - targets)
        nearest = np.where(closer_left, left, right)
        out, out_fps = _rgb([frames[i] for i in nearest]), float(fps)
    if size is not None:
        out = resize_crop(out, size[0], size[1])
    return out, out_fps


def probe_video(path: str | Path) -> dict:
    """Open a file's header only; return {frames, height, width, fps} or raise VideoError."""
    path = Path(path)
    try:
        with _open(path) as container:
            if not container.streams.video:
                raise VideoError(f"file {str(path)!r} has no video stream")
            stream = container.streams.video[0]
            if not stream.width or not stream.height:
                raise VideoError(f"file {str(path)!r} has a video stream with no size")
            return {"frames": int(stream.frames or 0), "height": stream.height,
                    "width": stream.width, "fps": _native_fps(stream)}
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"cannot open video {str(path)!r}: {_one_line(e)}") from None


def resize_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 (T, H, W, 3) frames to cover (height, width) keeping aspect; centre-crop."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoError(f"frames must have shape (T, H, W, 3), got {tuple(frames.shape)}")
    if height < 1 or width < 1:
        raise VideoError(f"target size must be positive, got {(height, width)}")
    _, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    # Crop first, in source pixels, to the target aspect ratio: identical to resize-then-crop up
    # to rounding, and it never upsamples pixels that would be thrown away.
    scale = max(height / h, width / w)
    crop_h = min(h, max(1, round(height / scale)))
    crop_w = min(w, max(1, round(width / scale)))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    cropped = frames[:, top:top + crop_h, left:left + crop_w]
    if (crop_h, crop_w) == (height, width):
        return np.ascontiguousarray(cropped)
    out = np.empty((len(frames), height, width, 3), np.uint8)
    for i in range(0, len(frames), _RESIZE_CHUNK):
        x = torch.from_numpy(np.ascontiguousarray(cropped[i:i + _RESIZE_CHUNK]))
        x = x.permute(0, 3, 1, 2).float()  # (T, 3, h, w)
        # Antialiasing only matters when shrinking; bilinear+antialias is a proper area filter.
        y = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True,
                          align_corners=False)
        out[i:i + _RESIZE_CHUNK] = y.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _as_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Check and return uint8 (T, H, W, 3) frames; a single (H, W, 3) image becomes T = 1."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise VideoError(f"frames must be uint8 (T, H, W, 3), got shape {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise VideoError(f"frames must be uint8 (T, H, W, 3), got dtype {frames.dtype}")
    return np.ascontiguousarray(frames)


def _encode(tmp: Path, images: list[av.VideoFrame], fps: float, muxer: str, codec: str,
            pix_fmt: str, options: dict[str, str], muxer_options: dict[str, str]) -> None:
    """Encode frames with `codec` into container format `muxer` at `fps`."""
    rate = Fraction(fps).limit_denominator(1001)  # 29.97 -> 30000/1001, 8.0 -> 8
    with av.open(str(tmp), "w", format=muxer, options=muxer_options) as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height = images[0].width, images[0].height
        stream.pix_fmt = pix_fmt
        for index, frame in enumerate(images):
            frame = frame.reformat(format=pix_fmt)
            # Explicit timestamps: frames out of a filter graph carry their own time base.
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush delayed frames


def _rgb_frames(frames: np.ndarray) -> list[av.VideoFrame]:
    return [av.VideoFrame.from_ndarray(image, format="rgb24") for image in frames]


def _palette_frames(frames: np.ndarray) -> list[av.VideoFrame]:
    """Quantise to one 256-colour palette built from all frames (ffmpeg palettegen/paletteuse).

    One global palette avoids flicker; content with few colours (the toy worlds) stays exact.
    """
    graph = av.filter.Graph()
    source = graph.add_buffer(width=frames.shape[2], height=frames.shape[1], format="rgb24",
                              time_base=Fraction(1, 100))
    split, sink = graph.add("split"), graph.add("buffersink")
    palette = graph.add("palettegen", "stats_mode=full")
    # Error diffusion (ffmpeg's default) measured lowest error on real clips, and unlike ordered
    # (bayer) dithering it leaves colours that are in the palette exact.
    apply = graph.add("paletteuse", "dither=sierra2_4a")
    source.link_to(split)
    split.link_to(apply, 0, 0)  # the frames ...
    split.link_to(palette, 1, 0)
    palette.link_to(apply, 0, 1)  # ... and the palette computed after the last frame
    apply.link_to(sink)
    graph.configure()
    for index, frame in enumerate(_rgb_frames(frames)):
        frame.pts, frame.time_base = index, Fraction(1, 100)
        graph.push(frame)
    graph.push(None)  # end of stream: palettegen emits its palette, paletteuse the frames
    out = []
    while True:
        try:
            out.append(graph.pull())
        except (av.BlockingIOError, av.EOFError):
            return out


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Edge-pad H and W to even sizes: x264's 4:2:0 mode rejects odd sizes."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: str | Path, frames: np.ndarray | torch.Tensor, fps: float) -> Path:
    """Write uint8 (T, H, W, 3) frames to .mp4, .webm, .gif or .png (a strip), atomically.

    H.264 in yuv420p cannot code odd sizes, so an .mp4 of odd height or width gets one extra
    edge-replicated row or column (players need yuv420p; 4:4:4 H.264 often does not play).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SUPPORTED_WRITE:
        raise VideoError(f"cannot write {str(path)!r}: unsupported extension {ext or '(none)'!r}; "
                         f"supported: {', '.join(SUPPORTED_WRITE)}")
    frames = _as_frames(frames)
    if not fps or fps <= 0:
        raise VideoError(f"fps must be > 0, got {fps}")
    if ext == ".png":
        strip = np.concatenate(list(frames), axis=1)  # (H, T * W, 3)
        write_png(path, strip)
        return path
    if ext == ".mp4":
        # crf 15: near-transparent quality for small toy clips; faststart: playable while loading.
        args = (_rgb_frames(_pad_even(frames)), fps, "mp4", "libx264", "yuv420p",
                {"crf": "15", "preset": "medium"}, {"movflags": "+faststart"})
    elif ext == ".webm":
        # Constant-quality mode (b=0 + crf) gives VP9 the same "quality, not bitrate" target;
        # libvpx codes odd sizes itself (chroma rounds up), so no padding.
        args = (_rgb_frames(frames), fps, "webm", "libvpx-vp9", "yuv420p",
                {"crf": "20", "b": "0", "deadline": "good", "cpu-used": "4"}, {})
    else:
        # GIF frame delays are whole 1/100 s, so fps above 100 cannot be stored.
        args = (_palette_frames(frames), min(fps, 100.0), "gif", "gif", "pal8", {}, {})
    try:
        atomic_write(path, lambda tmp: _encode(tmp, *args))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"cannot write {str(path)!r}: {_one_line(e)}") from None
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: str | Path, image: np.ndarray | torch.Tensor) -> Path:
    """Write a uint8 (H, W, 3) RGB image as a PNG file, atomically."""
    path = Path(path)
    frames = _as_frames(image)
    if len(frames) != 1:
        raise VideoError(f"write_png takes one (H, W, 3) image, got {len(frames)} frames")
    image = frames[0]
    h, w, _ = image.shape
    # Each scanline is prefixed by filter type 0 (none); zlib does the compression.
    raw = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit depth, colour type 2 = RGB
    blob = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw, 6)) + _png_chunk(b"IEND", b""))
    try:
        atomic_write(path, lambda tmp: tmp.write_bytes(blob))
    except OSError as e:
        raise VideoError(f"cannot write {str(path)!r}: {_one_line(e)}") from None
    return path
