"""Converting official DiT checkpoints: strictness, and sampling a tiny converted model.

The official layout is built here from a tiny config (names, conv patch embedding, output rows in
(p, q, c) order, the sin-cos table by its formula), never from downloaded weights or DiT's code.
"""

import math

import numpy as np
import pytest
import torch

from zoetrope.class_pipeline import ClassToImagePipeline
from zoetrope.cli import main
from zoetrope.config import DiTConfig, paper_size_of
from zoetrope.convert import convert_dit
from zoetrope.dit import DiT
from zoetrope.errors import UserError

TINY = DiTConfig(in_channels=4, patch_size=(1, 2, 2), dim=32, depth=2, num_heads=4,
                 num_classes=10, learn_sigma=True, pos_embed="sincos", qk_norm=False,
                 text_dim=0, pooled_text=False)
SIDE = 8  # latent side: a 4x4 grid of 2x2 patches


def sincos_table(dim: int, grid: int) -> torch.Tensor:
    """(1, grid * grid, dim): sin, cos of the column in the first half, of the row in the second."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def half(pos):
        angles = pos.reshape(-1)[:, None] * omega
        return np.concatenate([np.sin(angles), np.cos(angles)], 1)

    return torch.tensor(np.concatenate([half(cols), half(rows)], 1)[None], dtype=torch.float32)


def official_state(config: DiTConfig = TINY, seed: int = 0) -> tuple[dict, DiT]:
    """A random zoetrope DiT and the same weights in facebookresearch/DiT's layout."""
    torch.manual_seed(seed)
    model = DiT(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # nothing zero: every weight matters to the output
            p.normal_(0, 0.1)
    d, c, p, out_c = config.dim, config.in_channels, config.patch_size[1], config.out_channels
    state = {}
    for name, value in model.state_dict().items():
        if name.startswith("x_embedder."):
            name = name.replace("x_embedder.", "x_embedder.proj.")
            value = value.reshape(d, c, p, p) if value.ndim == 2 else value
        elif name.startswith("final_layer.linear."):  # ours (c, p, q) -> theirs (p, q, c)
            value = value.unflatten(0, (out_c, p, p)).movedim(0, 2).flatten(0, 2)
        name = name.replace("y_embedder.", "y_embedder.embedding_table.")
        name = name.replace(".mlp.0.", ".mlp.fc1.") if name.startswith("blocks.") else name
        name = name.replace(".mlp.2.", ".mlp.fc2.") if name.startswith("blocks.") else name
        state[name] = value.clone()
    state["pos_embed"] = sincos_table(d, SIDE // p)
    return state, model


def save(tmp_path, state, name="ckpt.pt"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_conversion_gives_the_same_model(tmp_path):
    state, model = official_state()
    config = convert_dit(save(tmp_path, state), tmp_path / "dit", num_heads=4)
    assert config == TINY
    loaded = DiT.from_pretrained(tmp_path / "dit")
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert loaded.extra_config == {"_source": "facebookresearch/DiT", "_image_size": SIDE * 8,
                                   "_guided_channels": 3}


def test_forward_image_matches_the_packed_forward():
    _, model = official_state()
    x, t, y = torch.randn(3, 4, SIDE, SIDE), torch.tensor([0, 17, 999]), torch.tensor([1, 10, 3])
    out = model.forward_image(x, t, y)
    assert out.shape == (3, 8, SIDE, SIDE)
    for i in range(3):  # each image alone, through the packed interface at t = step / 1000
        from zoetrope.patches import pack, unpack
        packed = pack([x[i, :, None]], (1, 2, 2))
        alone = unpack(model(packed, t[i:i + 1].double() / 1000, labels=y[i:i + 1]), packed)[0]
        assert torch.allclose(out[i], alone[:, 0], atol=1e-5)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("blocks.1.attn.qkv.weight"), "missing key 'blocks.1.attn.qkv.weight'"),
    (lambda s: s.update({"blocks.0.extra": torch.zeros(1)}), "unexpected key 'blocks.0.extra'"),
    (lambda s: s.update({"blocks.0.mlp.fc2.bias": torch.zeros(7)}), "'blocks.0.mlp.fc2.bias' has shape (7,)"),
    (lambda s: s.update({"final_layer.linear.weight": torch.zeros(15, 32)}), "'final_layer.linear.weight' has 15 rows"),
    (lambda s: s.update({"pos_embed": s["pos_embed"] + 1}), "key 'pos_embed'"),
    (lambda s: s.update({"blocks.0.attn.proj.bias": "text"}), "key 'blocks.0.attn.proj.bias' holds a str"),
])
def test_conversion_is_strict(tmp_path, change, message):
    state, _ = official_state()
    change(state)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert_dit(save(tmp_path, state), tmp_path / "dit", num_heads=4)
    assert not (tmp_path / "dit").exists()


class Payload:
    """A pickled object: loading it would run code, so weights_only refuses it."""


def test_a_pickle_that_is_not_tensors_is_refused(tmp_path):
    path = save(tmp_path, {"x_embedder.proj.weight": torch.zeros(1), "args": Payload()})
    with pytest.raises(UserError, match="not a plain state dict of tensors, refused"):
        convert_dit(path, tmp_path / "dit", num_heads=4)


def test_heads_come_from_the_paper_sizes():
    assert paper_size_of(28, 1152) == (28, 1152, 16) and paper_size_of(12, 384)[2] == 6
    state, _ = official_state()
    with pytest.raises(UserError, match="no DiT paper size has depth 2 and width 32"):
        from zoetrope.convert import infer_config
        infer_config(state)


def sample(tmp_path, seed, global_seed=0, **kwargs):
    state, _ = official_state()
    convert_dit(save(tmp_path, state), tmp_path / "dit", num_heads=4)
    pipe = ClassToImagePipeline.from_pretrained(tmp_path / "dit")
    torch.manual_seed(global_seed)  # the pipeline's own generator alone decides the noise
    return pipe([3, 7], num_inference_steps=4, seed=seed, image_size=SIDE * 8,
                output_type="latent", **kwargs)


def test_a_converted_model_samples_deterministically(tmp_path):
    first, again, other = sample(tmp_path, 0), sample(tmp_path, 0, global_seed=1), sample(tmp_path, 1)
    assert first.shape == (2, 4, SIDE, SIDE) and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.allclose(first, other)
    ddim = sample(tmp_path, 0, sampler="ddim")
    assert torch.equal(ddim, sample(tmp_path, 0, sampler="ddim")) and not torch.allclose(ddim, first)
    # the recorded 3-channel guidance is what converted models use; every channel differs
    assert not torch.allclose(first, sample(tmp_path, 0, guided_channels=None))
    assert torch.equal(first, sample(tmp_path, 0, guided_channels=3))


def tiny_sd_vae(directory):
    """A tiny diffusers AutoencoderKL saved like the SD VAE (scaling factor 0.18215)."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                                  latent_channels=4, norm_num_groups=4, sample_size=32,
                                  down_block_types=("DownEncoderBlock2D",) * 4,
                                  up_block_types=("UpDecoderBlock2D",) * 4)
    vae.save_pretrained(directory)


def test_cli_converts_and_writes_a_grid(tmp_path, capsys):
    state, _ = official_state()
    assert main(["convert", "dit", str(save(tmp_path, state)), "--out", str(tmp_path / "dit"),
                 "--num-heads", "4"]) == 0
    tiny_sd_vae(tmp_path / "vae")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {i}, alias {i}" for i in range(10)))
    args = ["generate", "--class-label", "3", "alias 7", "--class-names", str(names), "--model",
            str(tmp_path / "dit"), "--vae", str(tmp_path / "vae"), "--steps", "3", "--seed", "5"]
    assert main([*args, "-o", str(tmp_path / "a.png")]) == 0
    assert main([*args, "-o", str(tmp_path / "b.png")]) == 0
    assert "classes [3, 7], seed 5" in capsys.readouterr().out
    from PIL import Image
    a, b = (np.asarray(Image.open(tmp_path / f)) for f in ("a.png", "b.png"))
    assert a.shape == (64 + 4, 2 * 64 + 6, 3) and np.array_equal(a, b)
    assert main(["generate", "--class-label", "alias 7", "--model", str(tmp_path / "dit"),
                 "--vae", str(tmp_path / "vae"), "-o", str(tmp_path / "c.png")]) == 2
    assert "'alias 7' is not a class number" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
