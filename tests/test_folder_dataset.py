"""IndexedFolder: a caption folder as a deterministic, index-addressable training stream."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from zoetrope.config import load_recipe
from zoetrope.data.folder import IndexedFolder
from zoetrope.data.video import VideoError, write_video
from zoetrope.data.factory import build_dataset

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
pytestmark = pytest.mark.skipif(
    not (VIDEOS / "captions.jsonl").is_file(),
    reason=f"shared clips {VIDEOS} are absent (see shared/data/README.md)",
)
TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"
SIZES = [(5, 32, 48), (1, 24, 24), (9, 16, 16)]


def records() -> list[dict]:
    return [json.loads(line) for line in (VIDEOS / "captions.jsonl").read_text().splitlines()]


def test_samples_are_deterministic_sized_and_captioned():
    data = IndexedFolder(VIDEOS, sizes=SIZES, fps=8, seed=1)
    n = len(data)
    assert n == len(records()) == 13 and data.skipped == []
    epoch0 = [data.clip_index(i) for i in range(n)]
    epoch1 = [data.clip_index(n + i) for i in range(n)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(n))  # every clip once per epoch
    assert epoch0 != epoch1 and epoch0 != list(range(n))  # in a seeded, per-epoch order
    seen, samples = set(), {}
    for i in range(n):
        frames, caption = data.sample(i)
        assert caption == records()[epoch0[i]]["caption"]
        assert frames.dtype == torch.uint8 and tuple(frames.shape[:3]) in SIZES
        assert frames.shape[3] == 3 and frames.float().std() > 5, "decoded to a flat image"
        seen.add(tuple(frames.shape[:3]))
        samples[i] = frames
    assert seen == set(SIZES)
    again = IndexedFolder(VIDEOS, sizes=SIZES, fps=8, seed=1)  # a fresh process, other order
    for i in (11, 4, 0):
        assert torch.equal(again.sample(i)[0], samples[i])
    other = IndexedFolder(VIDEOS, sizes=SIZES, fps=8, seed=2)
    assert [other.clip_index(i) for i in range(n)] != epoch0


def test_start_time_is_drawn_per_sample():
    data = IndexedFolder(VIDEOS, sizes=[(5, 32, 48)], fps=8, seed=0)
    n = len(data)
    pool = [r["video"] for r in records()].index("test_cleaning_pool.mp4")  # 10 s long
    hits = [i for i in range(3 * n) if data.clip_index(i) == pool]
    first, second = (data.sample(i)[0] for i in hits[:2])
    assert not torch.equal(first, second)  # same clip and size, another start


def test_short_clips_hold_their_last_frame(tmp_path):
    shutil.copy(VIDEOS / "newtonscradle.gif", tmp_path)  # 0.72 s: 9 frames at 8 fps do not fit
    (tmp_path / "captions.jsonl").write_text(
        json.dumps({"video": "newtonscradle.gif", "caption": "a cradle"}) + "\n")
    frames, caption = IndexedFolder(tmp_path, sizes=[(9, 16, 16)], fps=8).sample(3)
    assert caption == "a cradle" and frames.shape == (9, 16, 16, 3)
    assert torch.equal(frames[-1], frames[-2]) and not torch.equal(frames[0], frames[-1])


def test_a_clip_that_fails_to_decode_is_an_error_naming_it_never_a_substitute(tmp_path):
    names = ["cut.mp4", "rawvideo_part_0.mp4", "newtonscradle.gif"]
    for name in names[1:]:
        shutil.copy(VIDEOS / name, tmp_path / name)
    noise = np.random.default_rng(1).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    data = write_video(tmp_path / "cut.mp4", noise, fps=10).read_bytes()  # header first ...
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # ... so only decoding fails
    lines = [json.dumps({"video": name, "caption": f"caption of {name}"}) for name in names]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")

    folder = IndexedFolder(tmp_path, sizes=[(9, 16, 16)], fps=2)  # 4.5 s: reads past the cut
    order = [folder.clip_index(i) for i in range(3)]
    index = order.index(0)  # the sample that reads cut.mp4
    with pytest.raises(VideoError, match=f"sample {index}: .*cut.mp4.*truncated"):
        folder.sample(index)
    assert [Path(path).name for path, _ in folder.skipped] == ["cut.mp4"]
    others = [i for i in range(3) if i != index]
    assert [folder.sample(i)[1] for i in others] == [f"caption of {names[order[i]]}" for i in others]


def test_training_reads_a_folder_through_the_recipe():
    recipe = load_recipe(TINY, ["--data.dataset=folder", f"--data.path={VIDEOS}", "--data.fps=0"])
    data = build_dataset(recipe.data, seed=0)
    assert isinstance(data, IndexedFolder) and data.fps is None  # 0: each clip's own rate
    frames, caption = data.sample(0)
    assert tuple(frames.shape[:3]) in {tuple(s) for s in recipe.data.sizes}
    assert caption == records()[data.clip_index(0)]["caption"]
