"""Pipeline directories: one atomic, versioned reader/writer (`weights`), and the round trip."""

import json

import numpy as np
import pytest
import torch

from zoetrope.config import DiffusionConfig, DiTConfig, TextConfig, VAEConfig
from zoetrope.pipeline import BUNDLED_MODEL, TextToVideoPipeline
from zoetrope.text import ToyTextEncoder
from zoetrope.weights import PIPELINE_VERSION, WeightsError, read_pipeline

PROMPT = "a red circle moving right"


def tiny_pipeline() -> TextToVideoPipeline:
    """Random 1-block models (non-zero DiT init so every weight matters), non-default settings."""
    torch.manual_seed(0)
    pipe = TextToVideoPipeline.from_configs(
        VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1), spatial_downsample=4),
        DiTConfig(in_channels=4, dim=32, depth=1, num_heads=2, text_dim=16),
        TextConfig(dim=16, depth=1, num_heads=2, max_length=16),
        DiffusionConfig(num_inference_steps=2, guidance_scale=3.0, restarts=0),
        fps=12, default_size=(5, 16, 16), sizes=[(5, 16, 16), (5, 16, 32)],
        negative_prompt="blurry", metadata={"trained_steps": 7})
    with torch.no_grad():
        for p in pipe.dit.parameters():
            p.copy_(torch.randn(p.shape) * 0.1)
    return pipe


@pytest.fixture(scope="module")
def pipe() -> TextToVideoPipeline:
    return tiny_pipeline()


def listing(directory) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_round_trip_gives_identical_outputs_and_settings(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    loaded = TextToVideoPipeline.from_pretrained(tmp_path / "model", attention="sdpa")
    for name in ("diffusion", "fps", "default_size", "sizes", "negative_prompt", "metadata"):
        assert getattr(loaded, name) == getattr(pipe, name), name
    assert loaded.dit.attention == "sdpa"
    a = pipe(PROMPT, seed=3, progress=False).frames
    b = loaded(PROMPT, seed=3, progress=False).frames
    assert np.array_equal(a, b)
    data = json.loads((tmp_path / "model" / "pipeline.json").read_text())
    assert data["format"] == "zoetrope-pipeline" and data["version"] == PIPELINE_VERSION == 2
    assert data["components"] == ["vae", "dit", "text_encoder"]
    assert data["negative_prompt"] == "blurry" and data["metadata"] == {"trained_steps": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left beside it


def test_version_1_still_loads_and_is_rewritten_as_version_2(tmp_path):
    bundled = read_pipeline(BUNDLED_MODEL)
    assert bundled.default_size == (17, 64, 64) and bundled.negative_prompt == ""
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "m")
    v1 = {"diffusion": json.loads((tmp_path / "m" / "pipeline.json").read_text())["diffusion"],
          "fps": 8, "default_size": [5, 16, 16], "note": "kept as metadata"}
    (tmp_path / "m" / "pipeline.json").write_text(json.dumps(v1))
    old = TextToVideoPipeline.from_pretrained(tmp_path / "m")
    assert old.sizes == [(5, 16, 16)] and old.negative_prompt == ""
    assert old.metadata == {"note": "kept as metadata"}
    old.save_pretrained(tmp_path / "m")  # replaces the version-1 directory with version 2
    data = json.loads((tmp_path / "m" / "pipeline.json").read_text())
    assert data["version"] == 2 and data["metadata"] == {"note": "kept as metadata"}


def test_interrupted_save_keeps_the_previous_directory_and_leaves_nothing(pipe, tmp_path,
                                                                          monkeypatch):
    pipe.save_pretrained(tmp_path / "model")
    before = listing(tmp_path / "model")
    other = tiny_pipeline()
    other.metadata = {"new": True}

    def crash(self, directory):  # the text encoder is written after the VAE and DiT
        (directory / "config.json").parent.mkdir(parents=True)
        (directory / "config.json").write_text("{")  # half a file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ToyTextEncoder, "save_pretrained", crash)
    for target in ("model", "fresh"):
        with pytest.raises(OSError, match="No space left"):
            other.save_pretrained(tmp_path / target)
    assert listing(tmp_path / "model") == before  # byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no fresh/, no temporaries
    monkeypatch.undo()
    other.save_pretrained(tmp_path / "model")  # a complete save replaces it
    assert TextToVideoPipeline.from_pretrained(tmp_path / "model").metadata == {"new": True}


def test_save_never_replaces_a_directory_holding_other_files(pipe, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WeightsError, match="holds 'notes.txt'.*new or empty directory"):
        pipe.save_pretrained(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    pipe.save_pretrained(tmp_path / "empty")  # an empty directory is fine
    assert (tmp_path / "empty" / "pipeline.json").is_file()


@pytest.mark.parametrize("change, message", [
    ({"version": 3}, "has version 3; this zoetrope reads up to 2"),
    ({"format": "other"}, "format 'other' is not 'zoetrope-pipeline'"),
    ({"colour": 1}, "has unknown keys colour"),
    ({"default_size": [17, 64]}, "default_size must hold \\[frames, height, width\\]"),
    ({"fps": 0}, "fps must be a positive number"),
    ({"diffusion": {"samplr": "euler"}}, "samplr"),
])
def test_bad_pipeline_json_is_a_one_line_error(pipe, tmp_path, change, message):
    pipe.save_pretrained(tmp_path / "m")
    data = json.loads((tmp_path / "m" / "pipeline.json").read_text())
    (tmp_path / "m" / "pipeline.json").write_text(json.dumps({**data, **change}))
    with pytest.raises(WeightsError, match=message) as info:
        TextToVideoPipeline.from_pretrained(tmp_path / "m")
    assert "\n" not in str(info.value)
    missing = {k: v for k, v in data.items() if k != "sizes"}
    (tmp_path / "m" / "pipeline.json").write_text(json.dumps(missing))
    with pytest.raises(WeightsError, match="lacks sizes"):
        read_pipeline(tmp_path / "m")
