"""diffusers VAE adapters: tiny random diffusers models saved under tmp_path and loaded back."""

from __future__ import annotations

import json

import pytest
import torch

from zoetrope.config import VAEConfig
from zoetrope.vae import CausalVAE, VAEShapeError
from zoetrope.weights import WeightsError

adapters = pytest.importorskip("zoetrope.vae_adapters")
diffusers = pytest.importorskip("diffusers")


def tiny_wan():
    return diffusers.AutoencoderKLWan(
        base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.5, -0.5, 0.0, 1.0], latents_std=[2.0, 1.0, 0.5, 4.0])


def tiny_ltx():
    # patch 2 x one spatio-temporal step: 4x space, 2x time (the real model: 32x, 8x).
    return diffusers.AutoencoderKLLTXVideo(
        latent_channels=4, block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        down_block_types=("LTXVideoDownBlock3D", "LTXVideoDownBlock3D"),
        layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
        spatio_temporal_scaling=(True, False), decoder_spatio_temporal_scaling=(True, False),
        decoder_inject_noise=(False, False, False), downsample_type=("conv", "conv"),
        upsample_residual=(False, False), upsample_factor=(1, 1), patch_size=2, patch_size_t=1,
        scaling_factor=0.5)


def tiny_cogvideox():
    # Three blocks: two downsampling steps, both also halving time (temporal_compression_ratio 4).
    return diffusers.AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=4,
        down_block_types=("CogVideoXDownBlock3D",) * 3, up_block_types=("CogVideoXUpBlock3D",) * 3,
        scaling_factor=0.7)


def tiny_image_vae():
    return diffusers.AutoencoderKL(
        block_out_channels=(8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        shift_factor=0.1)


# (builder, adapter class, frames, size, expected latent (C, t, h, w), normalisation check)
CASES = {
    "wan": (tiny_wan, "WanVAE", 9, 16, (4, 3, 2, 2)),
    "ltx": (tiny_ltx, "LTXVideoVAE", 5, 16, (4, 3, 4, 4)),
    "cogvideox": (tiny_cogvideox, "CogVideoXVAE", 9, 16, (4, 3, 4, 4)),
    "image": (tiny_image_vae, "ImageVAE", 3, 16, (4, 3, 8, 8)),
}


@pytest.fixture(params=list(CASES))
def saved(request, tmp_path):
    build, adapter_name, frames, size, shape = CASES[request.param]
    torch.manual_seed(0)
    build().save_pretrained(tmp_path / request.param)
    return tmp_path / request.param, adapter_name, frames, size, shape


def test_load_vae_picks_adapter_and_shapes_round_trip(saved):
    path, adapter_name, frames, size, shape = saved
    vae = adapters.load_vae(path)
    assert type(vae).__name__ == adapter_name
    assert vae.config.kind == json.loads((path / "config.json").read_text())["_class_name"]
    assert vae.latent_shape(frames, size, size) == shape
    assert vae.pixel_shape(*shape[1:]) == (frames, size, size)
    video = torch.rand(2, 3, frames, size, size) * 2 - 1
    with torch.no_grad():
        z = vae.encode_latent(video)
        assert z.shape == (2, *shape)
        assert vae.decode_latent(z).shape == video.shape
        g = torch.Generator().manual_seed(3)
        assert vae.encode_latent(video, generator=g, sample=True).shape == z.shape


def test_normalisation_is_inverted_by_decode(saved):
    path, *_ = saved
    vae = adapters.load_vae(path)
    z = torch.randn(1, 4, 3, 2, 2)
    torch.testing.assert_close(vae.denormalise(vae.normalise(z)), z)
    assert not torch.allclose(vae.normalise(z), z)  # every tiny config has a non-trivial scaling


def test_normalisation_matches_each_pipeline():
    z = torch.randn(1, 4, 2, 2, 2)
    wan = adapters.WanVAE(tiny_wan())
    mean = torch.tensor([0.5, -0.5, 0.0, 1.0]).view(1, 4, 1, 1, 1)
    std = torch.tensor([2.0, 1.0, 0.5, 4.0]).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(wan.normalise(z), (z - mean) / std)
    torch.testing.assert_close(adapters.CogVideoXVAE(tiny_cogvideox()).normalise(z), z * 0.7)
    image = adapters.ImageVAE(tiny_image_vae())
    torch.testing.assert_close(image.normalise(z), (z - 0.1) * 0.18215)
    torch.testing.assert_close(adapters.LTXVideoVAE(tiny_ltx()).normalise(z), z * 0.5)


def test_image_vae_encodes_frames_independently():
    vae = adapters.ImageVAE(tiny_image_vae()).eval()
    video = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        whole = vae.encode_latent(video)  # (2, 4, 3, 8, 8)
        alone = vae.encode_latent(video[:1, :, 1:2])  # frame 1 of the first video
        frames = vae.decode_latent(whole)
        frame = vae.decode_latent(whole[:1, :, 1:2])
    torch.testing.assert_close(whole[:1, :, 1:2], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(frames[:1, :, 1:2], frame, rtol=0, atol=1e-5)


def test_adapter_rejects_bad_sizes():
    vae = adapters.WanVAE(tiny_wan())
    with pytest.raises(VAEShapeError, match="num_frames=8 is not 1 \\+ 4k; nearest valid: 5 or 9"):
        vae.encode_latent(torch.zeros(1, 3, 8, 16, 16))


def test_load_vae_own_model_and_configs(tmp_path):
    config = VAEConfig(base_channels=4, channel_mult=(1, 1, 1, 1), latent_channels=4)
    fresh = adapters.load_vae(config)
    assert isinstance(fresh, CausalVAE)
    fresh.save_pretrained(tmp_path / "pipe" / "vae")
    for source in (tmp_path / "pipe" / "vae", tmp_path / "pipe",
                   VAEConfig(pretrained_path=str(tmp_path / "pipe" / "vae"))):
        assert isinstance(adapters.load_vae(source), CausalVAE)


def test_load_vae_errors_are_one_line(tmp_path):
    with pytest.raises(WeightsError, match="no config.json"):
        adapters.load_vae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(WeightsError, match="'UNet2DModel', not a VAE zoetrope can load; supported"):
        adapters.load_vae(tmp_path)
    with pytest.raises(WeightsError, match="needs vae.pretrained_path"):
        adapters.load_vae(VAEConfig(kind="AutoencoderKLWan"))


def test_a_diffusers_directory_without_safetensors_is_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    tiny_image_vae().save_pretrained(tmp_path / "vae", safe_serialization=False)  # a pickle
    assert list((tmp_path / "vae").glob("*.bin")) and not list((tmp_path / "vae").glob("*.safetensors"))
    with pytest.raises(WeightsError) as error:
        adapters.load_vae(tmp_path / "vae")
    message = str(error.value)
    assert "safetensors" in message and str(tmp_path / "vae") in message and "\n" not in message
