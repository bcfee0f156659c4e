"""Bad input at the generation boundary (CLI flags, Python API arguments): each is refused in one
line naming the setting, before any work and without leaving a file; a request too large for the
machine's memory is refused with its estimate; unknown prompt words are warned about."""

import logging
import math

import numpy as np
import pytest

from test_pipeline import model_dir, pipe, tiny_pipeline  # noqa: F401  (fixtures)
from zoetrope import memory
from zoetrope.cli import main
from zoetrope.errors import UserError


def generate(capsys, tmp_path, model_dir, *flags):
    """Run `zoetrope generate` on the tiny pipeline; returns (exit status, stderr lines, files)."""
    out = tmp_path / "out" / "clip.mp4"
    code = main(["generate", "a red circle moving right", "--model", str(model_dir),
                 "-o", str(out), "--steps", "1", "--seed", "0", *flags])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    return code, lines, files


@pytest.mark.parametrize("flags, setting", [
    (["--cfg", "nan"], "--cfg"), (["--cfg", "inf"], "--cfg"), (["--cfg", "-inf"], "--cfg"),
    (["--steps", "0"], "--steps"), (["--steps", "nan"], "--steps"), (["--steps", "2.5"], "--steps"),
    (["--restarts", "-1"], "--restarts"), (["--restarts", "inf"], "--restarts"),
    (["--frames", "0"], "--frames"), (["--seed", "-1"], "--seed"),
    (["--seed", "99999999999999999999"], "--seed"), (["--seed", str(2 ** 63)], "--seed"),
    (["--device", "banana"], "--device"), (["--device", "cuda:99"], "--device"),
])
def test_generate_refuses_bad_flags_in_one_line(capsys, tmp_path, model_dir, flags, setting):
    code, lines, files = generate(capsys, tmp_path, model_dir, *flags)
    assert code == 2
    assert len(lines) == 1 and setting in lines[0] and "Traceback" not in lines[0]
    assert not files


def test_generate_on_a_cpu_build_refuses_cuda_in_one_line(capsys, tmp_path, model_dir, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, lines, files = generate(capsys, tmp_path, model_dir, "--device", "cuda")
    assert code == 2 and len(lines) == 1 and "--device" in lines[0] and "CUDA" in lines[0]
    assert not files


@pytest.mark.parametrize("kwargs, name", [
    ({"prompt": 123}, "prompt"), ({"prompt": ["ok", 5]}, "prompt"),
    ({"negative_prompt": 7}, "negative_prompt"),
    ({"seed": 1.5}, "seed"), ({"seed": -1}, "seed"), ({"seed": 2 ** 64}, "seed"),
    ({"seed": True}, "seed"),
    ({"num_inference_steps": "3"}, "num_inference_steps"),
    ({"num_inference_steps": math.nan}, "num_inference_steps"),
    ({"num_inference_steps": 2.0}, "num_inference_steps"),
    ({"guidance_scale": math.nan}, "guidance_scale"), ({"guidance_scale": math.inf}, "guidance_scale"),
    ({"guidance_scale": "4"}, "guidance_scale"),
    ({"restarts": math.nan}, "restarts"), ({"restarts": -1}, "restarts"),
    ({"num_frames": 9.0}, "num_frames"), ({"height": "16"}, "height"), ({"width": -16}, "width"),
    ({"sizes": [(9, 16, 16.5)]}, "sizes"),
])
def test_python_api_refuses_bad_arguments_naming_them(pipe, kwargs, name):
    kwargs = {"prompt": "a red circle moving right", "progress": False, **kwargs}
    with pytest.raises(UserError) as info:
        pipe(**kwargs)
    message = str(info.value)
    assert name in message and "\n" not in message


def test_numpy_integers_and_floats_are_accepted(pipe):
    out = pipe("a red circle moving right", seed=np.int64(3), num_inference_steps=np.int32(1),
               guidance_scale=np.float32(2.0), height=np.int64(16), progress=False)
    assert out.seed == 3 and out.frames.shape[2] == 16


def test_a_fresh_seed_is_one_the_user_can_pass_back(pipe):
    out = pipe("a red circle moving right", num_inference_steps=1, progress=False)
    again = pipe("a red circle moving right", num_inference_steps=1, seed=out.seed, progress=False)
    assert 0 <= out.seed < 2 ** 63 and np.array_equal(out.frames, again.frames)


# -- memory ----------------------------------------------------------------------------------


def test_a_request_too_large_is_refused_before_any_work(pipe, monkeypatch):
    calls = []
    monkeypatch.setattr(pipe, "encode_text", lambda *a: calls.append(a))
    # a fixed limit, so the result does not depend on how much memory this machine has free
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2 * 2**30)
    with pytest.raises(UserError) as info:
        pipe("a red circle moving right", height=4096, width=4096, progress=False)
    message = str(info.value)
    assert "GB" in message and "available" in message and "force" in message and not calls


def test_force_skips_the_memory_check(pipe, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)  # nothing fits
    with pytest.raises(UserError):
        pipe("a red circle moving right", num_inference_steps=1, progress=False)
    out = pipe("a red circle moving right", num_inference_steps=1, progress=False, force=True)
    assert out.frames.shape == (1, 9, 16, 16, 3)


def test_the_cli_refuses_a_huge_size_and_force_is_a_flag(capsys, tmp_path, model_dir, monkeypatch):
    # A fixed limit: the tiny test model's 4096x4096 estimate (a few GB) would fit on a machine
    # with more memory free, and the test would then really generate it.
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2 * 2**30)
    code, lines, files = generate(capsys, tmp_path, model_dir, "--size", "4096x4096")
    assert code == 2 and len(lines) == 1 and "--force" in lines[0] and not files
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    code, lines, files = generate(capsys, tmp_path, model_dir, "--force")
    assert code == 0 and files


def test_estimate_grows_with_size_and_guidance():
    small = memory.generation_bytes([64], dim=32, pixel_sizes=[(9, 16, 16)], guided=False,
                                    decoder_channels=8)
    guided = memory.generation_bytes([64], dim=32, pixel_sizes=[(9, 16, 16)], guided=True,
                                     decoder_channels=8)
    large = memory.generation_bytes([256], dim=32, pixel_sizes=[(9, 32, 32)], guided=False,
                                    decoder_channels=8)
    assert 0 < small < guided and small < large


# -- unknown words ---------------------------------------------------------------------------


def test_unknown_prompt_words_are_warned_in_one_line(pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="zoetrope"):
        pipe("a purple hexagon moving diagonally", num_inference_steps=1, seed=0, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "hexagon" in warnings[0] and "purple" not in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoetrope"):
        pipe("a purple circle moving right", num_inference_steps=1, seed=0, progress=False)
    assert not caplog.records


def test_the_cli_prints_the_unknown_words(capsys, tmp_path, model_dir):
    out = tmp_path / "clip.mp4"
    code = main(["generate", "a blue hexagon wobbling", "--model", str(model_dir), "-o", str(out),
                 "--steps", "1", "--seed", "0"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert code == 0 and len(lines) == 1
    assert "hexagon" in lines[0] and "wobbling" in lines[0] and lines[0].startswith("zoetrope: warning:")
