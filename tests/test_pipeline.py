"""Text-to-video pipeline and `zoetrope generate`, on a tiny random pipeline (CPU, seconds)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zoetrope.cli import main
from zoetrope.config import ConfigError, DiffusionConfig, DiTConfig, TextConfig, VAEConfig
from zoetrope.data.video import read_video
from zoetrope.pipeline import TextToVideoPipeline, VideoOutput, preview_gif
from zoetrope.weights import WeightsError

PROMPT = "a red circle moving right"


def tiny_pipeline(patch_size=(1, 2, 2), default_size=(9, 16, 16), **diffusion):
    """VAE 4x4x4 (4 latent channels), 1-block DiT, 1-layer toy text encoder; random weights."""
    torch.manual_seed(0)
    pipe = TextToVideoPipeline.from_configs(
        VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1), spatial_downsample=4),
        DiTConfig(in_channels=4, patch_size=patch_size, dim=32, depth=1, num_heads=2, text_dim=16),
        TextConfig(dim=16, depth=1, num_heads=2, max_length=16),
        DiffusionConfig(**{"num_inference_steps": 2, "guidance_scale": 3.0, **diffusion}),
        fps=8, default_size=default_size, sizes=[default_size, (5, 16, 32)])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # undo the zero init (adaLN, gates, output) so every input matters
        for p in pipe.dit.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return pipe


@pytest.fixture(scope="module")
def pipe() -> TextToVideoPipeline:
    return tiny_pipeline()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, pipe) -> Path:
    directory = tmp_path_factory.mktemp("pipe")
    pipe.save_pretrained(directory)
    return directory


def run(pipe: TextToVideoPipeline, prompt=PROMPT, **kw) -> VideoOutput:
    return pipe(prompt, progress=False, **{"seed": 0, **kw})


def test_seed_reproduces_and_different_seeds_differ(pipe):
    a, b, c = run(pipe, seed=7), run(pipe, seed=7), run(pipe, seed=8)
    assert a.frames.shape == (1, 9, 16, 16, 3) and a.frames.dtype == np.uint8 and a.fps == 8
    assert np.array_equal(a.frames, b.frames) and a.seed == 7
    assert np.abs(a.frames.astype(int) - c.frames).mean() > 1
    assert a.frames.std() > 1  # not a constant image
    g = torch.Generator().manual_seed(7)
    assert np.array_equal(pipe(PROMPT, generator=g, progress=False).frames, a.frames)


def test_save_load_round_trip(pipe, model_dir):
    loaded = TextToVideoPipeline.from_pretrained(model_dir)
    assert json.loads((model_dir / "pipeline.json").read_text())["default_size"] == [9, 16, 16]
    assert loaded.sizes == [(9, 16, 16), (5, 16, 32)] and loaded.fps == 8
    assert np.array_equal(run(loaded, seed=3).frames, run(pipe, seed=3).frames)


@pytest.mark.parametrize("size", [(9, 16, 16), (5, 8, 24), (5, 24, 8), (1, 16, 16)])
def test_output_shapes(pipe, size):
    frames, height, width = size
    out = run(pipe, num_frames=frames, height=height, width=width)
    assert out.frames.shape == (1, frames, height, width, 3)
    assert set(out.timings) == {"text", "denoise", "decode", "total"}


def test_batch_of_prompts_in_one_packed_call(pipe):
    calls = []
    hook = pipe.dit.register_forward_hook(lambda m, args, out: calls.append(args[0].num_samples))
    try:
        same = run(pipe, ["a red circle", "a blue square"], num_frames=5)
        mixed = run(pipe, ["a red circle", "a blue square"], sizes=[(9, 16, 16), (5, 8, 24)])
    finally:
        hook.remove()
    assert same.frames.shape == (2, 5, 16, 16, 3)
    assert isinstance(mixed.frames, list)
    assert [f.shape for f in mixed.frames] == [(9, 16, 16, 3), (5, 8, 24, 3)]
    assert calls == [4] * 4  # 2 steps x (2 prompts + 2 negatives) in ONE call per step
    # Packing changes nothing: each sample equals its own run, with its own time shift and noise.
    first = run(pipe, "a red circle", num_frames=9).frames[0]  # prompt 0 draws first from the seed
    g = torch.Generator().manual_seed(0)
    torch.randn(pipe.latent_shape((9, 16, 16)), generator=g)  # skip prompt 0's noise
    second = pipe("a blue square", sizes=[(5, 8, 24)], generator=g, progress=False).frames[0]
    assert np.abs(mixed.frames[0].astype(int) - first).max() <= 1  # float rounding only
    assert np.abs(mixed.frames[1].astype(int) - second).max() <= 1


def test_sizes_a_model_cannot_take_name_the_nearest_valid(pipe):
    with pytest.raises(ValueError, match="num_frames=16.*nearest valid: 13 or 17"):
        run(pipe, num_frames=16)
    with pytest.raises(ValueError, match="width=63.*nearest valid: 60 or 64"):
        run(pipe, width=63)
    with pytest.raises(ValueError, match="height=36.*patch size 2; nearest valid: 32 or 40"):
        run(pipe, height=36)  # the VAE takes 36, the 2x2 patches do not
    pipe_t2 = tiny_pipeline(patch_size=(2, 2, 2), default_size=(13, 16, 16))
    with pytest.raises(ValueError, match="num_frames=17.*nearest valid: 13 or 21"):
        run(pipe_t2, num_frames=17)
    with pytest.raises(ValueError, match="2 entries for 1 prompts"):
        run(pipe, sizes=[(5, 16, 16), (5, 16, 16)])


def test_guidance_scale_one_runs_only_the_conditional_branch(pipe):
    calls = []
    hook = pipe.dit.register_forward_hook(lambda m, args, out: calls.append(args[0].num_samples))
    try:
        plain = run(pipe, guidance_scale=1.0)
        assert calls == [1, 1]
        plain_neg = run(pipe, guidance_scale=1.0, negative_prompt="a green star")
    finally:
        hook.remove()
    guided = run(pipe)
    other_negative = run(pipe, negative_prompt="a green star")
    assert np.array_equal(plain.frames, plain_neg.frames)  # the negative prompt is unused at 1
    assert not np.array_equal(plain.frames, guided.frames)
    assert not np.array_equal(guided.frames, other_negative.frames)


def test_first_frame_is_kept_clean(pipe):
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)  # -> 16x16
    a = run(pipe, num_frames=5, first_frame=image, seed=1).frames[0]
    b = run(pipe, num_frames=5, first_frame=image, seed=2).frames[0]
    assert np.array_equal(a[0], b[0])  # causal VAE: frame 0 comes from clean latent frame 0 only
    assert not np.array_equal(a[1:], b[1:])
    with pytest.raises(ValueError, match="nothing to generate"):
        run(pipe, num_frames=1, first_frame=image)


def test_guidance_interval_limits_guidance_to_its_noise_levels(pipe, tmp_path):
    # 2 Euler steps visit t = 1 and one t < 0.5: an interval holding neither is plain conditional
    # sampling, one holding only t = 1 guides the first step alone
    plain, full = run(pipe, guidance_scale=1.0).frames, run(pipe).frames
    nowhere = tiny_pipeline(guidance_interval=(0.0, 0.01))
    assert np.array_equal(run(nowhere).frames, plain)
    first = tiny_pipeline(guidance_interval=(0.9, 1.0))
    out = run(first).frames
    assert not np.array_equal(out, plain) and not np.array_equal(out, full)
    first.save_pretrained(tmp_path)  # kept in pipeline.json
    assert np.array_equal(run(TextToVideoPipeline.from_pretrained(tmp_path)).frames, out)
    with pytest.raises(ConfigError, match="guidance_interval"):
        DiffusionConfig(guidance_interval=(0.5, 0.5))


# sampler settings, guidance interval -> (guided, conditional-only) DiT calls in 20 unshifted steps
GUIDED_CALLS = {
    "euler": ({}, (0.72, 1.0), (6, 14)),  # t = 1, 0.95, ..., 0.75
    "restart": ({"restarts": 2, "restart_steps": 3}, (0.24, 1.0), (18, 8)),  # + each round's 0.3
    "ddpm": ({"objective": "ddpm", "sampler": "ddpm"}, (0.8, 1.0), (4, 16)),  # 999, 946, 894, 841
    "ddim": ({"objective": "ddpm", "sampler": "ddim"}, (0.8, 1.0), (4, 16)),
}


@pytest.mark.parametrize("case", list(GUIDED_CALLS))
def test_guidance_interval_counts_guided_calls_in_every_sampler(case):
    # DDPM and DDIM once guided nowhere: their times were divided by 1000 a second time
    settings, (lo, hi), expected = GUIDED_CALLS[case]
    pipe = tiny_pipeline(num_inference_steps=20, guidance_interval=(lo, hi), shift_base_tokens=0,
                         **settings)
    calls = []  # (samples in the DiT call, its time): 2 samples are cond + uncond, guided
    hook = pipe.dit.register_forward_hook(
        lambda m, args, out: calls.append((args[0].num_samples, args[1].max().item())))
    try:
        run(pipe, num_frames=5)
    finally:
        hook.remove()
    guided = [t for n, t in calls if n == 2]
    assert (len(guided), len(calls) - len(guided)) == expected
    assert all(lo <= t <= hi for t in guided)


def test_callback_sees_every_step(pipe):
    infos = []
    out = run(pipe, restarts=1, callback=infos.append)
    d = pipe.diffusion
    total = d.num_inference_steps + d.restart_steps
    assert [(i.step, i.total) for i in infos] == [(k, total) for k in range(1, total + 1)]
    last = infos[-1]
    assert last.x.shape == last.denoised.shape and last.x.shape[0] == last.t.shape[0]
    assert np.array_equal(out.frames, run(pipe, restarts=1).frames)


def test_restarts_are_seeded_saved_and_checked(pipe, tmp_path):
    plain = run(pipe).frames
    twice = tiny_pipeline(restarts=2, restart_time=0.5, restart_steps=1)
    a, b = run(twice).frames, run(twice).frames
    assert np.array_equal(a, b) and not np.array_equal(a, plain)
    assert not np.array_equal(run(twice, seed=1).frames, a)
    assert np.array_equal(run(twice, restarts=0).frames, plain)  # the call's setting wins
    twice.save_pretrained(tmp_path)  # kept in pipeline.json
    assert np.array_equal(run(TextToVideoPipeline.from_pretrained(tmp_path)).frames, a)
    # a batch of two: prompt 0 is the video its seed gives alone, restarts included
    both = run(twice, [PROMPT, "a blue square moving up"]).frames
    assert np.array_equal(both[0], a[0])
    with pytest.raises(ValueError, match="restarts must be between 0 and"):
        run(pipe, restarts=-1)
    with pytest.raises(ConfigError, match="euler sampler"):
        DiffusionConfig(objective="ddpm", sampler="ddim", restarts=1)
    with pytest.raises(ConfigError, match="restart_time"):
        DiffusionConfig(restarts=1, restart_time=1.0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_ddpm_samplers(sampler):
    pipe = tiny_pipeline(objective="ddpm", sampler=sampler, eta=0.5)
    a, b = run(pipe, num_frames=5), run(pipe, num_frames=5)
    assert a.frames.shape == (1, 5, 16, 16, 3) and np.array_equal(a.frames, b.frames)
    with pytest.raises(ValueError, match="does not fit objective"):
        tiny_pipeline(objective="ddpm", sampler="euler")


def test_bad_prompts(pipe):
    for bad in ["", "   ", [], ["ok", ""]]:
        with pytest.raises(ValueError, match="prompt"):
            run(pipe, bad)


def test_video_output_save(tmp_path, pipe):
    one = run(pipe, num_frames=5)
    for ext in (".mp4", ".gif", ".png"):
        (path,) = one.save(tmp_path / f"clip{ext}")
        assert path == tmp_path / f"clip{ext}" and path.stat().st_size > 0
    two = run(pipe, ["a red circle", "a blue square"], num_frames=5)
    assert [p.name for p in two.save(tmp_path / "batch.gif")] == ["batch_0.gif", "batch_1.gif"]
    with pytest.raises(ValueError, match="unsupported extension"):
        two.save(tmp_path / "batch.avi")
    assert not list(tmp_path.glob("*.avi")) and not list(tmp_path.glob("batch.avi*"))


def test_training_preview_gif_puts_prompts_side_by_side(tmp_path, pipe):
    path = preview_gif(pipe, ["a", "b"], tmp_path / "previews" / "step.gif")
    frames, _ = read_video(path)
    assert frames.shape[1:3] == (pipe.default_size[1], 2 * pipe.default_size[2])


def test_cli_generate(tmp_path, model_dir, capsys):
    out = tmp_path / "x.mp4"
    args = ["generate", PROMPT, "--model", str(model_dir), "-o", str(out), "--steps", "2"]
    assert main(args) == 0
    assert out.stat().st_size > 0 and str(out) in capsys.readouterr().out


def test_cli_generate_default_output_name(tmp_path, model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["generate", "A red circle, moving!", "--model", str(model_dir), "--steps", "1",
            "--frames", "1", "--size", "16x24", "--cfg", "1", "--seed", "3"]
    assert main(args) == 0
    assert (tmp_path / "outputs" / "a-red-circle-moving.mp4").is_file()
    assert "1 frames, 16x24" in capsys.readouterr().out


def _corrupt(directory: Path) -> Path:
    directory.mkdir()
    (directory / "pipeline.json").write_text("{not json")
    return directory


@pytest.mark.parametrize("args, message", [
    (["", ], "prompt is empty"),
    ([PROMPT, "--size", "63x64"], "height=63"),
    ([PROMPT, "--size", "big"], "HEIGHTxWIDTH"),
    ([PROMPT, "--frames", "16"], "nearest valid: 13 or 17"),
    ([PROMPT, "--restarts", "-1"], "--restarts"),
    # checked before the model is loaded, so the extension is named, not the missing model
    ([PROMPT, "-o", "{tmp}/x.avi", "--model", "{tmp}/missing"], "unsupported extension '.avi'"),
    ([PROMPT, "--model", "{tmp}/missing"], "no pipeline directory"),
    ([PROMPT, "--model", "CORRUPT"], "not valid JSON"),
])
def test_cli_generate_bad_input_is_one_line_and_writes_nothing(tmp_path, model_dir, capsys, args,
                                                                message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "CORRUPT" in args:
        args[args.index("CORRUPT")] = str(_corrupt(tmp_path / "corrupt"))
    if "--model" not in args:
        args += ["--model", str(model_dir)]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "x.mp4")]
    assert main(["generate", *args, "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".mp4", ".avi", ".tmp")]


def test_cli_generate_without_bundled_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("zoetrope.pipeline.BUNDLED_MODEL", tmp_path / "shapes-demo")
    assert main(["generate", PROMPT, "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bundled model is not installed" in err and "--model" in err


def test_cli_generate_fast_uses_the_bundled_student(tmp_path, monkeypatch, capsys, model_dir):
    monkeypatch.setattr("zoetrope.pipeline.BUNDLED_MODEL", tmp_path / "missing")
    monkeypatch.setattr("zoetrope.pipeline.FAST_MODEL", model_dir)  # stands in for the student
    assert main(["generate", PROMPT, "--fast", "--seed", "0", "-o", str(tmp_path / "x.mp4")]) == 0
    assert (tmp_path / "x.mp4").is_file()
    capsys.readouterr()
    monkeypatch.setattr("zoetrope.pipeline.FAST_MODEL", tmp_path / "shapes-demo-fast")
    assert main(["generate", PROMPT, "--fast", "-o", str(tmp_path / "y.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bundled student is not installed" in err
    assert main(["generate", PROMPT, "--fast", "--model", str(model_dir), "-o",
                 str(tmp_path / "y.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--fast" in err and "--model" in err
    assert not (tmp_path / "y.mp4").exists()


def test_pipeline_json_missing_keys_and_components(tmp_path, model_dir):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "pipeline.json").write_text(json.dumps({"fps": 8}))
    with pytest.raises(WeightsError, match="lacks diffusion, default_size"):
        TextToVideoPipeline.from_pretrained(tmp_path / "p")
    (tmp_path / "p" / "pipeline.json").write_text((model_dir / "pipeline.json").read_text())
    with pytest.raises(WeightsError, match="no config.json"):
        TextToVideoPipeline.from_pretrained(tmp_path / "p")
