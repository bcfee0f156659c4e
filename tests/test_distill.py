"""The distill stage: teacher pairs, a student that samples in its step count, exact resume."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from zoetrope import checkpoint as ckpt
from zoetrope.config import ConfigError, load_recipe
from zoetrope.diffusion import sampling_grid
from zoetrope.patches import pack
from zoetrope.pipeline import TextToVideoPipeline
from zoetrope.train import Interrupted, stage_loop, train
from zoetrope.train.distill_task import Pairs

from test_pipeline import PROMPT, tiny_pipeline
from test_train import TINY, assert_same_weights


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    directory = tmp_path_factory.mktemp("teacher")
    tiny_pipeline(default_size=(5, 16, 16), motion_guidance_scale=2.0).save_pretrained(directory)
    return directory


def recipe(teacher, *extra):
    return load_recipe(TINY, ['--train.stages=["distill"]', f"--train.distill.teacher={teacher}",
                              "--train.distill.steps=6", "--train.distill.batch_size=4",
                              "--train.distill.checkpoint_every=2", "--train.distill.pairs=6",
                              "--train.distill.pair_batch=4", "--train.distill.student_steps=2",
                              "--train.distill.warmup_steps=1", "--train.distill.lr=1e-3",
                              "--data.sizes=[[5, 16, 16], [1, 16, 16]]", *extra])


@pytest.fixture(scope="module")
def reference(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    train(recipe(teacher), out, progress=False)
    return out


def test_pairs_are_the_teachers_own_samples(teacher, reference):
    pairs = Pairs(reference / "pairs", 6, 4)
    pipe = TextToVideoPipeline.from_pretrained(teacher)
    (x0, noise, mid), caption = pairs.sample(1)
    (x0_again, _, _), _ = pairs.sample(7)  # indices wrap around the pairs
    assert len(mid) == 1  # the teacher's state at the 2-step student's middle time
    assert torch.equal(x0, x0_again) and x0.shape == noise.shape
    # the teacher's ODE (Euler, its guidance, no restarts) from this noise lands on x0
    config = dataclasses.replace(pipe.diffusion, restarts=0)
    packed = pack([noise], pipe.dit.config.patch_size)
    grid = sampling_grid(config, config.num_inference_steps, pipe._token_shift(packed))
    text, mask = pipe.encode_text([caption, ""])
    out = pipe.denoise(packed, None, text, mask, grid, config.guidance_scale, None,
                       progress=False)
    torch.testing.assert_close(out, pack([x0], pipe.dit.config.patch_size).tokens, rtol=0,
                               atol=1e-5)
    # ... and its state halfway down its grid is the state at the student's middle time, which
    # the student's 2-step grid reaches too
    steps = config.num_inference_steps
    half = pipe.denoise(packed, None, text, mask, grid[: steps // 2 + 1], config.guidance_scale,
                        None, progress=False)
    torch.testing.assert_close(half, pack([mid[0]], pipe.dit.config.patch_size).tokens, rtol=0,
                               atol=1e-5)
    student_grid = sampling_grid(dataclasses.replace(config, restarts=0), 2,
                                 pipe._token_shift(packed))
    torch.testing.assert_close(student_grid[1], grid[steps // 2], rtol=0, atol=1e-12)


def test_the_student_samples_in_its_step_count(reference):
    student = TextToVideoPipeline.from_pretrained(reference / "final")
    assert student.diffusion.num_inference_steps == 2 and student.diffusion.guidance_scale == 1
    assert student.diffusion.motion_guidance_scale is None  # unguided with given frames too
    calls = []
    student.dit.register_forward_hook(lambda *_: calls.append(1))
    out = student(PROMPT, seed=0, progress=False)
    assert len(calls) == 2 and out.frames.shape == (1, 5, 16, 16, 3)
    config = json.loads((reference / "final" / "pipeline.json").read_text())
    assert config["diffusion"]["restarts"] == 0


def test_distillation_moves_the_student_off_the_teacher(teacher, reference):
    t = load_file(str(teacher / "dit" / "model.safetensors"))
    s = load_file(str(reference / "final" / "dit" / "model.safetensors"))
    assert t.keys() == s.keys()
    assert any(not torch.equal(t[k], s[k]) for k in t)


def test_stop_and_resume_is_bit_exact(teacher, reference, tmp_path):
    stopper = stage_loop(recipe(teacher), "distill", tmp_path, progress=False)
    stopper.should_stop = lambda: stopper.step == 3
    with pytest.raises(Interrupted):
        stopper.run()
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000003"
    (tmp_path / "pairs" / "pairs-00001.safetensors").unlink()  # made again, the same
    stage_loop(recipe(teacher), "distill", tmp_path, progress=False).run()
    assert_same_weights(tmp_path, reference)


def test_bad_distill_recipes_are_one_line(teacher, tmp_path):
    with pytest.raises(ConfigError, match="teacher is required"):
        stage_loop(load_recipe(TINY, ['--train.stages=["distill"]']), "distill", tmp_path)
    with pytest.raises(ConfigError, match="train.stages"):
        load_recipe(TINY, ['--train.stages=["dit", "distill"]'])
    with pytest.raises(ConfigError, match="student_steps"):
        recipe(teacher, "--train.distill.student_steps=0")


def test_piecewise_trains_one_euler_step_between_the_teachers_states(teacher, tmp_path):
    """Each sample's input is the teacher's state at a student grid time t_k, at t_k, and its
    target the velocity of one Euler step to the teacher's state at t_{k+1}."""
    task = stage_loop(recipe(teacher, "--train.distill.method=piecewise"), "distill", tmp_path,
                      progress=False).task
    items = [(k, task.dataset.sample(k)) for k in range(6)]
    seen = {}

    def model(packed, t, prompts):
        seen["x"], seen["t"] = packed.tokens.clone(), t.clone()
        return torch.zeros_like(packed.tokens)

    loss, _ = task.loss(model, items, torch.device("cpu"))
    patch = task.module.dit.config.patch_size
    per_sample, windows = [], set()
    ids = pack([s[0] for _, (s, _) in items], patch).sample_ids
    for j, (_, ((x0, noise, mid), _)) in enumerate(items):
        states = [pack([s], patch).tokens for s in (noise, *mid, x0)]
        t = seen["t"][ids == j]
        n = len(states[0])
        grid = sampling_grid(dataclasses.replace(task.teacher.diffusion, restarts=0), 2,
                             task.teacher._token_shift(pack([x0], patch)))
        k = int(torch.argmin((grid[:-1] - float(t[0])).abs()))
        windows.add(k)
        assert torch.allclose(t, torch.full((n,), float(grid[k])))
        torch.testing.assert_close(seen["x"][ids == j], states[k], rtol=0, atol=1e-5)
        v = (states[k + 1] - states[k]) / float(grid[k + 1] - grid[k])
        per_sample.append(v.pow(2).mean())
    assert windows == {0, 1}  # both of the 2-step student's windows are trained
    torch.testing.assert_close(loss, torch.stack(per_sample).mean(), rtol=1e-4, atol=0)


def test_piecewise_needs_the_teachers_grid_to_hold_the_students(teacher, tmp_path):
    with pytest.raises(ConfigError, match="multiple of student_steps"):
        stage_loop(recipe(teacher, "--train.distill.method=piecewise",
                          "--train.distill.student_steps=3", "--train.distill.teacher_steps=4"),
                   "distill", tmp_path, progress=False)
    with pytest.raises(ConfigError, match="method"):
        recipe(teacher, "--train.distill.method=progressive")
