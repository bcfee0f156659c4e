"""Caption folders: the real shared clips all load; bad files are skipped and reported."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from zoetrope.data.folder import CaptionFolder
from zoetrope.data.video import VideoError, write_video

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
needs_videos = pytest.mark.skipif(
    not (VIDEOS / "captions.jsonl").is_file(),
    reason=f"shared clips {VIDEOS} are absent (see shared/data/README.md)",
)
SMALL = ["rawvideo_part_0.mp4", "newtonscradle.gif"]  # the two cheapest real clips to decode


@needs_videos
def test_every_shared_clip_decodes(caplog):
    records = [json.loads(line) for line in (VIDEOS / "captions.jsonl").read_text().splitlines()]
    data = CaptionFolder(VIDEOS, num_frames=5, size=(32, 48), fps=8)
    assert data.skipped == [] and len(data) == len(records) == 13
    for i, record in enumerate(records):
        item = data.items[i]
        assert item.path.name == record["video"] and 176 <= max(item.height, item.width) <= 718
        frames, caption = data[i]
        assert caption == record["caption"]
        assert frames.shape == (5, 32, 48, 3) and frames.dtype == torch.uint8
        assert frames.float().std() > 5, f"{item.path.name} decoded to a flat image"
    assert "skipping" not in caplog.text


def _bad_folder(root: Path) -> None:
    """Two good real clips, and one of each kind of bad file, listed in captions.jsonl."""
    for name in SMALL:
        shutil.copy(VIDEOS / name, root / name)
    (root / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "empty.mp4").write_bytes(b"")
    noise = np.random.default_rng(1).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    data = write_video(root / "cut.mp4", noise, fps=10).read_bytes()  # header first ...
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])  # ... so only decoding finds the cut
    lines = [json.dumps({"video": name, "caption": f"caption of {name}"})
             for name in ["cut.mp4", SMALL[0], "noise.mp4", "missing.mp4", "empty.mp4", SMALL[1]]]
    lines.insert(2, "{not json")
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")


@needs_videos
def test_bad_files_are_skipped_and_reported(tmp_path, caplog):
    _bad_folder(tmp_path)
    data = CaptionFolder(tmp_path, num_frames=12, size=(16, 16), fps=4)  # reads past the cut
    assert caplog.text.count("skipping") == 4
    reported = {Path(path).name: reason for path, reason in data.skipped}
    assert set(reported) == {"noise.mp4", "missing.mp4", "empty.mp4", "captions.jsonl:3"}
    assert "empty" in reported["empty.mp4"] and "does not exist" in reported["missing.mp4"]
    assert [item.path.name for item in data.items] == ["cut.mp4", *SMALL]  # header looks fine
    caplog.clear()
    frames, caption = data[0]  # the truncated clip is found and the next good one served
    assert re.search("skipping .*cut.mp4.*truncated", caplog.text)
    assert caption == f"caption of {SMALL[0]}" and frames.shape == (12, 16, 16, 3)
    assert Path(data.skipped[-1][0]).name == "cut.mp4"
    assert [data[i][1] for i in range(1, 3)] == [f"caption of {name}" for name in SMALL]
    assert data[0][1] == f"caption of {SMALL[0]}"  # skipped once, not decoded again
    assert len(data.skipped) == 5


@needs_videos
def test_txt_captions_and_frame_padding(tmp_path, caplog):
    shutil.copy(VIDEOS / SMALL[1], tmp_path / "cradle.gif")  # 36 frames, 0.8 s
    (tmp_path / "cradle.txt").write_text("a rendered Newton's cradle swinging\n")
    shutil.copy(VIDEOS / SMALL[0], tmp_path / "uncaptioned.mp4")
    data = CaptionFolder(tmp_path, num_frames=12, fps=10)
    assert "no caption file uncaptioned.txt" in caplog.text
    assert len(data) == 1
    frames, caption = data[0]
    assert caption == "a rendered Newton's cradle swinging"
    assert frames.shape == (12, 150, 200, 3)  # native size; 0.82 s at 10 fps -> 9 real frames
    assert torch.equal(frames[8], frames[11]) and not torch.equal(frames[0], frames[8])


def test_a_folder_without_good_clips_fails_clearly(tmp_path, caplog):
    (tmp_path / "a.mp4").write_bytes(b"junk")
    (tmp_path / "a.txt").write_text("junk")
    with pytest.raises(ValueError, match="no readable captioned clips"):
        CaptionFolder(tmp_path)
    assert "skipping" in caplog.text
    with pytest.raises(FileNotFoundError):
        CaptionFolder(tmp_path / "nowhere")


def test_all_files_failing_at_load_time_raise(tmp_path, caplog):
    noise = np.random.default_rng(2).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    data = write_video(tmp_path / "full.mp4", noise, fps=10).read_bytes()
    (tmp_path / "full.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "full.txt").write_text("noise")
    folder = CaptionFolder(tmp_path)
    with pytest.raises(VideoError, match="could be decoded"):
        folder[0]
    assert "skipping" in caplog.text


def test_unlisted_clips_and_empty_captions_are_skipped_and_reported(tmp_path, caplog):
    noise = np.random.default_rng(3).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        write_video(tmp_path / name, noise, fps=10)
    records = [{"video": "a.mp4", "caption": "a caption"}, {"video": "b.mp4", "caption": "  "}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    data = CaptionFolder(tmp_path)
    assert [item.path.name for item in data.items] == ["a.mp4"]
    reported = {Path(path).name: reason for path, reason in data.skipped}
    assert reported.keys() == {"b.mp4", "c.mp4"}
    assert "empty caption" in reported["b.mp4"] and "not listed in captions.jsonl" in reported["c.mp4"]
    assert "b.mp4: empty caption" in caplog.text and "c.mp4: not listed" in caplog.text

    (tmp_path / "captions.jsonl").unlink()  # captions beside the clips instead
    (tmp_path / "a.txt").write_text("a caption\n")
    (tmp_path / "b.txt").write_text("\n")
    (tmp_path / "c.txt").write_text("c caption")
    data = CaptionFolder(tmp_path)
    assert [item.path.name for item in data.items] == ["a.mp4", "c.mp4"]
    assert [(Path(path).name, reason) for path, reason in data.skipped] == [("b.mp4", "empty caption in b.txt")]
