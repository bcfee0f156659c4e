"""The bundled demo model: installed with the package, loads, generates, follows a prompt."""

from pathlib import Path

import numpy as np
import pytest
import torch

from zoetrope.critic import critique
from zoetrope.pipeline import BUNDLED_MODEL, FAST_MODEL, TextToVideoPipeline

pytestmark = pytest.mark.skipif(not (BUNDLED_MODEL / "pipeline.json").is_file(),
                                reason="the bundled model is not in this checkout")


@pytest.fixture(scope="module")
def pipe():
    return TextToVideoPipeline.from_pretrained(BUNDLED_MODEL)


def test_bundled_model_is_small_and_complete():
    files = {p.relative_to(BUNDLED_MODEL).as_posix() for p in BUNDLED_MODEL.rglob("*") if p.is_file()}
    for part in ("dit", "vae", "text_encoder"):
        assert {f"{part}/config.json", f"{part}/model.safetensors"} <= files
    size = sum(p.stat().st_size for p in BUNDLED_MODEL.rglob("*") if p.is_file())
    assert size < 24 * 2**20, size


def test_default_generation_same_seed_same_frames(pipe):
    a = pipe("a red circle moving right", seed=7, progress=False).frames
    b = pipe("a red circle moving right", seed=7, progress=False).frames
    c = pipe("a red circle moving right", seed=8, progress=False).frames
    assert a.shape == (1, 17, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_generated_clip_shows_the_prompted_color(pipe):
    # A weak check that stays stable across retraining: the critic must see the asked-for color
    # in most of a few clips (the full measurement is `zoetrope eval`, in the README).
    prompts = ["a yellow square moving left", "a blue circle moving up", "a green triangle moving down"]
    video = pipe(prompts, seed=0, progress=False).frames
    right = sum(critique(frames, p).adherence.get("color") is True for frames, p in zip(video, prompts))
    assert right >= 2


def test_default_output_is_pinned(pipe):
    # Frames the bundled model made when it was bundled (`make demo`'s prompt and seed, and a
    # packed batch of two sizes): a refactor must not change what the bundled model draws. Float
    # sums may round differently with the thread count (one uint8 value of the demo differs
    # between 1 and 2 threads, by 1), so a handful of off-by-one values is tolerated; anything a
    # real change does moves thousands of values by much more.
    ref = np.load(Path(__file__).parent / "data" / "bundled_reference.npz")
    demo = pipe("a red circle moving right", seed=0, progress=False).frames[0]
    mixed = pipe(["a blue square moving up", "a green triangle moving left"], seed=3,
                 sizes=[(17, 64, 64), (17, 48, 80)], progress=False).frames
    for got, want in zip([demo, *mixed], [ref["demo_seed0"], ref["mixed_0"], ref["mixed_1"]]):
        assert got.shape == want.shape and got.dtype == np.uint8
        diff = np.abs(got.astype(int) - want)
        assert (diff > 0).mean() <= 1e-3 and diff.max() <= 2, ((diff > 0).sum(), diff.max())


@pytest.mark.skipif(not (FAST_MODEL / "pipeline.json").is_file(),
                    reason="the bundled student is not in this checkout")
def test_bundled_student_samples_in_four_unguided_steps(pipe):
    student = TextToVideoPipeline.from_pretrained(FAST_MODEL)
    d = student.diffusion
    assert (d.num_inference_steps, d.guidance_scale, d.restarts) == (4, 1.0, 0)
    # the same VAE and text encoder as its teacher: only the DiT was distilled
    for part in ("vae", "text_encoder"):
        mine, theirs = getattr(student, part).state_dict(), getattr(pipe, part).state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    calls = []
    student.dit.register_forward_hook(lambda module, args, out: calls.append(out.shape[0]))
    prompts = ["a yellow square moving left", "a blue circle moving up"]
    video = student(prompts, seed=0, progress=False).frames
    assert len(calls) == 4 and video.shape == (2, 17, 64, 64, 3)
    right = sum(critique(frames, p).adherence.get("color") is True
                for frames, p in zip(video, prompts))
    assert right == 2
