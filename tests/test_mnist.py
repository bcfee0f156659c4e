"""Moving MNIST with text, on the real MNIST digits in ../shared/data/mnist."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from zoetrope.data.mnist import MovingMNIST, find_mnist, load_mnist, render_clip
from zoetrope.data.shapes import DIRECTIONS

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
pytestmark = pytest.mark.skipif(
    not MNIST.is_dir(), reason=f"shared MNIST folder {MNIST} is absent (see shared/data/README.md)"
)


def test_loads_the_real_test_split():
    images, labels = load_mnist(str(MNIST))
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    assert images.max() == 255 and 0.05 < (images > 128).mean() < 0.3  # ink on a dark field


def test_finds_the_folder_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ../shared from here does not exist: falls back to the repo
    assert find_mnist().resolve() == MNIST.resolve()
    with pytest.raises(FileNotFoundError, match="images-idx3"):
        find_mnist(tmp_path)


@pytest.mark.parametrize("size", [(17, 64, 64), (9, 48, 80)])
def test_clip_matches_caption_from_pixels(size):
    t, h, w = size
    images, labels = load_mnist(str(MNIST))
    for seed, (digit, direction) in enumerate((d, r) for d in range(10) for r in DIRECTIONS):
        clip = render_clip(t, h, w, digit=digit, direction=direction, seed=seed, root=MNIST)
        assert clip.caption == f"the digit {digit} moving {direction}"
        assert labels[clip.index] == digit
        frames = clip.frames.astype(np.float64)
        assert clip.frames.shape == (t, h, w, 3) and clip.frames.dtype == np.uint8
        assert (frames[..., 0] == frames[..., 1]).all() and (frames[..., 1] == frames[..., 2]).all()
        assert clip.size == round(0.4 * min(h, w))
        assert clip.frames.max() > 200  # white-ish strokes
        # Intensity-weighted centroid moves the stated way over the first quarter of the clip.
        grey = frames[..., 0]
        k = math.ceil(t / 4)
        ys, xs = np.mgrid[0:h, 0:w]
        cx = [(grey[i] * xs).sum() / grey[i].sum() for i in (0, k)]
        cy = [(grey[i] * ys).sum() / grey[i].sum() for i in (0, k)]
        dx, dy = cx[1] - cx[0], cy[1] - cy[0]
        seen = (("right" if dx > 0 else "left") if abs(dx) > abs(dy) else
                ("down" if dy > 0 else "up"))
        assert seen == direction, clip.caption
        # All ink sits inside the digit's box, which stays inside the frame.
        half = clip.size / 2
        assert (clip.centers >= half - 1e-9).all()
        assert (clip.centers[:, 0] <= w - half + 1e-9).all()
        assert (clip.centers[:, 1] <= h - half + 1e-9).all()


def test_reproducible_and_random_attributes():
    a = render_clip(9, 32, 32, seed=5, root=MNIST)
    b = render_clip(9, 32, 32, seed=5, root=MNIST)
    assert np.array_equal(a.frames, b.frames) and a.caption == b.caption
    captions = {render_clip(2, 32, 32, seed=s, root=MNIST).caption for s in range(40)}
    assert len(captions) > 15
    with pytest.raises(ValueError, match="0..9"):
        render_clip(5, 32, 32, digit=12, root=MNIST)


def test_dataset_samples_deterministically():
    world = MovingMNIST(root=MNIST, sizes=[(5, 32, 32), (9, 40, 56)], seed=2)
    frames, caption = world.sample(7)
    again, caption2 = MovingMNIST(root=MNIST, sizes=[(5, 32, 32), (9, 40, 56)], seed=2).sample(7)
    assert torch.equal(frames, again) and caption == caption2
    assert caption.startswith("the digit ") and frames.dtype == torch.uint8
    stream = iter(world)
    assert [next(stream)[1] for _ in range(3)] == [world.sample(i)[1] for i in range(3)]
    assert {tuple(world.sample(i)[0].shape) for i in range(12)} == {(5, 32, 32, 3), (9, 40, 56, 3)}
