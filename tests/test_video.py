"""Video I/O: round trips through every writable format, resampling, resize/crop, errors."""

import zlib
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from zoetrope.data import video as video_module
from zoetrope.data.video import (SUPPORTED_WRITE, VideoError, probe_video, read_video,
                                 resize_crop, write_png, write_video)


def smooth_clip(frames: int = 9, height: int = 48, width: int = 64) -> np.ndarray:
    """Moving colour gradients: the smooth content lossy codecs are meant for."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    rgb = [128 + 100 * np.sin(x / 9 + t / 3), 128 + 100 * np.cos(y / 7 - t / 4),
           128 + 100 * np.sin((x + y) / 11 + t / 5)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)


def numbered_clip(frames: int, size: int = 32) -> np.ndarray:
    """Frame i is a flat grey of level 10 * i, so its index survives lossy coding."""
    levels = (10 * np.arange(frames)).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (frames, size, size, 3)).copy()


def frame_indices(frames: np.ndarray) -> list[int]:
    return [int(round(f.mean() / 10)) for f in frames]


# GIF has one 256-colour palette and this clip has thousands of colours, hence its looser bound.
@pytest.mark.parametrize("ext, tolerance", [(".mp4", 6.0), (".webm", 6.0), (".gif", 12.0)])
def test_round_trip_is_close(tmp_path, ext, tolerance):
    clip = smooth_clip()
    path = write_video(tmp_path / f"clip{ext}", clip, fps=8)
    frames, fps = read_video(path)
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    assert np.abs(frames.astype(float) - clip).mean() < tolerance
    assert fps == pytest.approx(8, rel=0.05)  # GIF stores delays in 1/100 s: 12 -> 8.33 fps
    assert [p.name for p in tmp_path.iterdir()] == [f"clip{ext}"]  # no temp file left behind


def test_mp4_is_h264_yuv420p_and_pads_odd_sizes(tmp_path):
    clip = smooth_clip(5, 33, 47)
    path = write_video(tmp_path / "odd.mp4", clip, fps=12)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
    frames, fps = read_video(path)
    assert frames.shape == (5, 34, 48, 3) and fps == 12
    assert np.abs(frames[:, :33, :47].astype(float) - clip).mean() < 4
    # webm and gif keep odd sizes as they are
    for ext in (".webm", ".gif"):
        assert read_video(write_video(tmp_path / f"odd{ext}", clip, 12))[0].shape == clip.shape


def test_pure_colours_survive_gif_exactly(tmp_path):
    clip = np.zeros((4, 16, 24, 3), np.uint8)
    clip[:, :, :8] = (255, 0, 0)
    clip[:, 4:12, 10:20] = (0, 255, 255)
    clip[2:, 12:] = (255, 255, 255)
    frames, _ = read_video(write_video(tmp_path / "pure.gif", clip, 10))
    assert np.array_equal(frames, clip)


def test_png_strip_and_write_png_are_lossless(tmp_path):
    clip = smooth_clip(3, 20, 30)
    path = write_video(tmp_path / "strip.png", torch.from_numpy(clip), fps=8)  # tensors work too
    with av.open(str(path)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert np.array_equal(image, np.concatenate(list(clip), axis=1))  # (H, T * W, 3)
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    # The image data decompresses to H rows of (filter byte + W * 3 bytes).
    idat = raw[raw.index(b"IDAT") + 4:raw.index(b"IEND") - 8]
    assert len(zlib.decompress(idat)) == 20 * (1 + 90 * 3)
    single = write_png(tmp_path / "one.png", clip[1])
    with av.open(str(single)) as container:
        assert np.array_equal(next(container.decode(video=0)).to_ndarray(format="rgb24"), clip[1])


def test_unknown_extension_and_bad_frames_raise_one_line(tmp_path):
    with pytest.raises(VideoError, match="supported: .mp4, .webm, .gif, .png") as info:
        write_video(tmp_path / "clip.mkv", smooth_clip(), fps=8)
    assert "\n" not in str(info.value) and SUPPORTED_WRITE == (".mp4", ".webm", ".gif", ".png")
    with pytest.raises(VideoError, match="uint8"):
        write_video(tmp_path / "clip.mp4", smooth_clip().astype(np.float32), fps=8)
    with pytest.raises(VideoError, match="shape"):
        write_video(tmp_path / "clip.mp4", np.zeros((2, 8, 8), np.uint8), fps=8)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"old")

    def broken(tmp, *args, **kwargs):
        tmp.write_bytes(b"half a video")
        raise av.FFmpegError(5, "disk on fire")

    monkeypatch.setattr(video_module, "_encode", broken)
    with pytest.raises(VideoError, match="disk on fire"):
        write_video(target, smooth_clip(), fps=8)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["keep.mp4"]


def test_fps_resampling_start_and_count(tmp_path):
    path = write_video(tmp_path / "n.mp4", numbered_clip(24), fps=24)  # 1 s, frame i at i/24 s
    frames, fps = read_video(path)
    assert frame_indices(frames) == list(range(24)) and fps == 24
    frames, fps = read_video(path, fps=8)
    assert fps == 8 and frame_indices(frames) == [0, 3, 6, 9, 12, 15, 18, 21]
    frames, _ = read_video(path, fps=8, num_frames=3, start=0.25)
    assert frame_indices(frames) == [6, 9, 12]
    frames, _ = read_video(path, fps=60, num_frames=5)  # upsampling repeats the nearest frame
    assert frame_indices(frames) == [0, 0, 1, 1, 2]
    frames, _ = read_video(path, num_frames=5, start=0.5)
    assert frame_indices(frames) == [12, 13, 14, 15, 16]
    frames, _ = read_video(path, num_frames=100)  # a short clip gives what it has
    assert len(frames) == 24
    with pytest.raises(VideoError, match="no frames after 5 s"):
        read_video(path, start=5.0)


def test_streams_not_starting_at_zero_are_shifted(tmp_path):
    path = tmp_path / "late.mkv"
    with av.open(str(path), "w") as container:  # first timestamp 1.0 s, as cut streams have
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i, image in enumerate(numbered_clip(6)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = 10 + i, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert frame_indices(read_video(path, start=0.2, num_frames=2)[0]) == [2, 3]
    assert frame_indices(read_video(path, fps=10)[0]) == list(range(6))


def test_read_resizes_to_size(tmp_path):
    path = write_video(tmp_path / "wide.mp4", smooth_clip(3, 48, 96), fps=8)
    frames, _ = read_video(path, size=(32, 40))
    assert frames.shape == (3, 32, 40, 3)


def test_resize_crop_keeps_aspect_and_centre():
    bands = np.zeros((2, 40, 120, 3), np.uint8)
    bands[:, :, :40] = (255, 0, 0)
    bands[:, :, 40:80] = (0, 255, 0)
    bands[:, :, 80:] = (0, 0, 255)
    square = resize_crop(bands, 20, 20)  # the centre third survives, scaled by 1/2
    assert square.shape == (2, 20, 20, 3) and square.dtype == np.uint8
    assert (square == (0, 255, 0)).all()
    thin = resize_crop(bands, 10, 30)  # same aspect: all three bands, shrunk 4x
    assert thin.shape == (2, 10, 30, 3)
    assert (thin[:, :, 2] == (255, 0, 0)).all() and (thin[:, :, 27] == (0, 0, 255)).all()
    flat = np.full((1, 33, 50, 3), 77, np.uint8)  # antialiasing must not darken the borders
    assert (resize_crop(flat, 64, 64) == 77).all() and (resize_crop(flat, 7, 5) == 77).all()
    assert resize_crop(bands, 40, 120) is bands
    stripes = np.zeros((1, 60, 60, 3), np.uint8)
    stripes[:, :, ::2] = 255  # 1-px stripes shrunk 3x: without antialiasing, 0 and 255 again
    assert np.abs(resize_crop(stripes, 20, 20).astype(float) - 127.5).max() < 20
    tall = resize_crop(np.zeros((1, 100, 30, 3), np.uint8), 16, 16)
    assert tall.shape == (1, 16, 16, 3)


def test_unreadable_files_raise_video_error(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "text.txt").write_text("not a video")
    for name, pattern in [("empty.mp4", "empty file"), ("noise.mp4", "cannot open"),
                          ("missing.mp4", "No such file"), ("text.txt", "cannot open")]:
        with pytest.raises(VideoError, match=pattern) as info:
            read_video(tmp_path / name)
        assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
        assert name in str(info.value)
        with pytest.raises(VideoError):
            probe_video(tmp_path / name)
    with av.open(str(tmp_path / "sound.wav"), "w") as container:  # audio only
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    for function in (read_video, probe_video):
        with pytest.raises(VideoError, match="no video stream"):
            function(tmp_path / "sound.wav")


def test_truncated_file_is_detected(tmp_path):
    rng = np.random.default_rng(1)
    clip = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)  # noise: big, even frames
    path = write_video(tmp_path / "full.mp4", clip, fps=10)  # faststart: header first
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert probe_video(cut)["frames"] == 30  # the header alone looks fine ...
    with pytest.raises(VideoError, match="truncated"):  # ... decoding finds the cut
        read_video(cut)
    assert len(read_video(cut, num_frames=2)[0]) == 2  # the part before the cut is usable
