"""Causal video VAE: shape arithmetic, causality, chunked = one shot, save/load, learning."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from zoetrope.config import ConfigError, VAEConfig
from zoetrope.vae import (CausalVAE, DiagonalGaussian, VAEShapeError, latent_shape, psnr,
                          set_scaling_from_data, vae_loss)

# (config, frames, size): the default factors, time x2 with patchified pixels, and image-only.
CONFIGS = [
    (VAEConfig(base_channels=8, channel_mult=(1, 2, 2, 2), latent_channels=4), 17, 16),
    (VAEConfig(base_channels=8, channel_mult=(1, 2), temporal_downsample=2, spatial_downsample=4,
               patch_size=2, num_res_blocks=2), 9, 16),
    (VAEConfig(base_channels=8, channel_mult=(1, 1), temporal_downsample=1, spatial_downsample=2,
               latent_channels=4), 4, 16),
]
# Folding frames and pixels into channels, with per-pixel stem and head: all of time folded (the
# demo model's layout), and time half folded, half done by a strided causal conv.
FOLDED = [
    VAEConfig(base_channels=8, channel_mult=(1, 1), latent_channels=4, patch_size=4,
              temporal_patch_size=4, pixel_channels=4),
    VAEConfig(base_channels=8, channel_mult=(1, 2, 2), latent_channels=4, patch_size=2,
              temporal_patch_size=2, pixel_channels=3),
]
CONFIGS += [(config, 17, 16) for config in FOLDED]
CAUSAL = [CONFIGS[0][0], *FOLDED]  # every one 4x in time, 8x in space, 4 latent channels


@pytest.fixture(autouse=True)
def one_thread():
    """Small convs gain nothing from threads, and on a busy 2-core machine two threads spin-wait:
    the learning test took 15x longer with 2 threads than with 1 while other jobs ran."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_vae(config: VAEConfig, seed: int = 0) -> CausalVAE:
    """A VAE whose every weight is random and non-zero (so no residual branch is a no-op)."""
    torch.manual_seed(seed)
    vae = CausalVAE(config).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(0.0, 0.15) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    return vae


def video(frames: int, size: int, batch: int = 1, seed: int = 1) -> torch.Tensor:
    """Random pixels in [-1, 1]: (B, 3, T, H, W)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1


# -- shapes ----------------------------------------------------------------------------------


def test_latent_shape_default_factors():
    vae = CausalVAE(VAEConfig(base_channels=4, latent_channels=8))
    assert vae.latent_shape(17, 64, 64) == (8, 5, 8, 8)
    assert vae.latent_shape(1, 64, 96) == (8, 1, 8, 12)  # an image is a one-frame video
    assert vae.latent_shape(257, 128, 128) == (8, 65, 16, 16)
    assert vae.pixel_shape(5, 8, 8) == (17, 64, 64)
    assert vae.pixel_shape(1, 8, 12) == (1, 64, 96)


@pytest.mark.parametrize("args, message", [
    ((16, 64, 64), "num_frames=16 is not 1 + 4k; nearest valid: 13 or 17"),
    ((0, 64, 64), "num_frames=0 must be at least 1; nearest valid: 1"),
    ((17, 60, 64), "height=60 is not a multiple of 8; nearest valid: 56 or 64"),
    ((17, 64, 4), "width=4 is not a multiple of 8; nearest valid: 8"),
])
def test_latent_shape_errors_name_nearest_valid(args, message):
    with pytest.raises(VAEShapeError) as info:
        latent_shape(*args, channels=8, temporal=4, spatial=8)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_latent_shape_temporal_factor_one_takes_any_frames():
    assert latent_shape(6, 16, 16, channels=4, temporal=1, spatial=2) == (4, 6, 8, 8)


def test_encode_rejects_bad_sizes():
    vae = CausalVAE(CONFIGS[0][0])
    with pytest.raises(VAEShapeError, match="nearest valid: 13 or 17"):
        vae.encode(video(16, 32))


def test_config_validation():
    with pytest.raises(ConfigError, match="temporal_downsample"):
        VAEConfig(temporal_downsample=3)
    with pytest.raises(ConfigError, match="at least 4 stages"):
        VAEConfig(channel_mult=(1, 2))
    VAEConfig(channel_mult=(1, 2, 4), patch_size=2)  # patchifying removes one stage
    VAEConfig(kind="AutoencoderKLLTXVideo", temporal_downsample=8, spatial_downsample=32)
    with pytest.raises(ConfigError, match="temporal_patch_size"):
        VAEConfig(temporal_patch_size=3)
    with pytest.raises(ConfigError, match="temporal_patch_size"):
        VAEConfig(temporal_downsample=2, temporal_patch_size=4)
    with pytest.raises(ConfigError, match="pixel_channels"):
        VAEConfig(pixel_channels=-1)
    VAEConfig(channel_mult=(1, 1), patch_size=4, temporal_patch_size=4)  # folding removes stages


@pytest.mark.parametrize("config, frames, size", CONFIGS)
def test_output_shapes(config, frames, size):
    vae = random_vae(config)
    x = video(frames, size)
    with torch.no_grad():
        posterior = vae.encode(x)
        assert posterior.mean.shape == (1, *vae.latent_shape(frames, size, size))
        assert vae.decode(posterior.mode()).shape == x.shape


# -- causality -------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CAUSAL)
def test_latent_frame_depends_only_on_past_frames(config):
    vae = random_vae(config)
    x = video(17, 16)
    with torch.no_grad():
        base = vae.encode(x).mean  # (B, C, 5, h, w)
        for i in range(base.shape[2]):
            later = x.clone()
            later[:, :, 4 * i + 1:] = torch.rand_like(later[:, :, 4 * i + 1:])
            changed = vae.encode(later).mean
            torch.testing.assert_close(changed[:, :, :i + 1], base[:, :, :i + 1], rtol=0, atol=1e-5)
            own = x.clone()
            own[:, :, 4 * i] = -own[:, :, 4 * i]  # latent i does see its last frame
            assert (vae.encode(own).mean[:, :, i] - base[:, :, i]).abs().max() > 1e-3


@pytest.mark.parametrize("config", CAUSAL)
def test_latent_frame_pixels_are_the_frames_each_latent_sees(config):
    vae = random_vae(config)
    table = vae.latent_frame_pixels(17)
    assert table == [range(0, 1), range(1, 5), range(5, 9), range(9, 13), range(13, 17)]
    assert vae.latent_frame_pixels(1) == [range(0, 1)]
    x = video(17, 16)
    with torch.no_grad():
        base = vae.encode(x).mean
        for j, frames in enumerate(table):  # changing latent j's frames leaves latents < j alone
            moved = x.clone()
            moved[:, :, frames.start:] = -moved[:, :, frames.start:]
            changed = vae.encode(moved).mean
            torch.testing.assert_close(changed[:, :, :j], base[:, :, :j], rtol=0, atol=1e-5)
            assert (changed[:, :, j] - base[:, :, j]).abs().max() > 1e-3
    with pytest.raises(VAEShapeError, match="nearest valid: 17 or 21"):
        vae.latent_frame_pixels(18)


@pytest.mark.parametrize("config", CAUSAL)
def test_first_frame_is_encoded_on_its_own(config):
    vae = random_vae(config)
    x = video(17, 16)
    with torch.no_grad():
        clip = vae.encode(x).mean[:, :, :1]
        image = vae.encode(x[:, :, :1]).mean
    torch.testing.assert_close(clip, image, rtol=0, atol=1e-5)


@pytest.mark.parametrize("config", CAUSAL)
def test_decoded_frames_depend_only_on_past_latents(config):
    vae = random_vae(config)
    z = torch.randn(1, 4, 5, 2, 2)
    with torch.no_grad():
        base = vae.decode(z)
        for i in range(4):
            later = z.clone()
            later[:, :, i + 1:] += 1.0
            out = vae.decode(later)
            seen = 4 * i + 1  # pixel frames 0..4i come from latent frames 0..i
            torch.testing.assert_close(out[:, :, :seen], base[:, :, :seen], rtol=0, atol=1e-5)
            assert (out[:, :, seen:] - base[:, :, seen:]).abs().max() > 1e-3


# -- chunked = one shot ----------------------------------------------------------------------


@pytest.mark.parametrize("config, frames, size", CONFIGS)
@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_chunked_decode_equals_one_shot(config, frames, size, chunk_size):
    vae = random_vae(config)
    t = vae.latent_shape(frames, size, size)[1]
    z = torch.randn(1, config.latent_channels, t, size // config.spatial_downsample,
                    size // config.spatial_downsample)
    with torch.no_grad():
        whole = vae.decode(z)
        chunked = vae.decode(z, chunk_size=chunk_size)
    assert whole.abs().max() > 0.1  # a non-trivial output
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("config, frames, size", CONFIGS)
@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_chunked_encode_equals_one_shot(config, frames, size, chunk_size):
    vae = random_vae(config)
    x = video(frames, size)
    with torch.no_grad():
        whole, chunked = vae.encode(x), vae.encode(x, chunk_size=chunk_size)
    torch.testing.assert_close(chunked.mean, whole.mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked.logvar, whole.logvar, rtol=0, atol=1e-5)


# -- latent distribution and scaling ---------------------------------------------------------


def test_diagonal_gaussian():
    mean, logvar = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    q = DiagonalGaussian(mean, logvar)
    a = q.sample(torch.Generator().manual_seed(7))
    b = q.sample(torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, q.mode())
    assert q.kl().shape == (2,) and (q.kl() > 0).all()
    standard = DiagonalGaussian(torch.zeros(1, 4, 1, 2, 2), torch.zeros(1, 4, 1, 2, 2))
    assert standard.kl().abs().max() < 1e-7
    # Closed form for one element: 0.5 * (mu^2 + var - 1 - log var).
    one = DiagonalGaussian(torch.full((1, 1), 2.0), torch.full((1, 1), 1.0))
    assert one.kl().item() == pytest.approx(0.5 * (4 + np.e - 1 - 1))


def test_encode_latent_normalises_and_decode_latent_undoes_it():
    config, frames, size = CONFIGS[0]
    vae = random_vae(config)
    x = video(frames, size, batch=3)
    with torch.no_grad():
        raw = vae.encode(x).mode()
        mean, std = set_scaling_from_data(vae, [raw[:1], raw[1:]])
        assert (mean, std) == (vae.config.scaling_mean, vae.config.scaling_std)
        z = vae.encode_latent(x)
        assert z.mean().abs() < 1e-4 and (z.std() - 1).abs() < 1e-4
        # Only float rounding separates the two: (z - m) / s * s + m is not exactly z.
        torch.testing.assert_close(vae.decode_latent(z), vae.decode(raw), rtol=1e-4, atol=1e-4)
        chunked = vae.decode_latent(z, chunk_size=1)
        torch.testing.assert_close(chunked, vae.decode(raw), rtol=1e-4, atol=1e-4)


def test_save_load_round_trip(tmp_path):
    config, frames, size = CONFIGS[1]
    vae = random_vae(config)
    vae.config.scaling_mean, vae.config.scaling_std = 0.25, 1.75
    vae.save_pretrained(tmp_path / "vae")
    loaded = CausalVAE.from_pretrained(tmp_path / "vae")
    assert loaded.config == vae.config and not loaded.training
    x = video(frames, size)
    with torch.no_grad():
        z = vae.encode_latent(x)
        assert torch.equal(loaded.encode_latent(x), z)
        assert torch.equal(loaded.decode_latent(z), vae.decode_latent(z))


# -- it learns -------------------------------------------------------------------------------


def moving_squares(rng: np.random.Generator, batch: int, frames: int = 9, size: int = 32
                   ) -> torch.Tensor:
    """Pure-coloured squares moving in straight lines on black: (B, 3, T, H, W) in [-1, 1]."""
    out = np.full((batch, 3, frames, size, size), -1.0, np.float32)
    for b in range(batch):
        side = int(rng.integers(size // 5, size // 3 + 1))
        color = rng.choice([-1.0, 1.0], size=3)
        color[rng.integers(3)] = 1.0  # never black on black
        y, x = rng.uniform(0, size - side, 2)
        vy, vx = rng.uniform(-2, 2, 2)
        for t in range(frames):
            top = int(np.clip(y + vy * t, 0, size - side))
            left = int(np.clip(x + vx * t, 0, size - side))
            out[b, :, t, top:top + side, left:left + side] = color[:, None, None]
    return torch.from_numpy(out)


@pytest.mark.slow
def test_tiny_vae_learns_moving_squares():
    # An optimisation check on a fixed set of clips, so it runs in seconds. Generalising to fresh
    # clips takes thousands of steps (see benchmarks/ and the demo recipe), too slow for a test.
    torch.manual_seed(0)
    config = VAEConfig(base_channels=16, channel_mult=(1, 2, 2), latent_channels=8,
                       spatial_downsample=4, patch_size=2, temporal_downsample=2)
    vae = CausalVAE(config)
    opt = torch.optim.Adam(vae.parameters(), lr=LR)
    clips = moving_squares(np.random.default_rng(0), 4, frames=9, size=16)
    with torch.no_grad():
        before = psnr(vae.decode(vae.encode(clips).mode()), clips).item()
    start = time.time()
    for _ in range(STEPS):
        loss, metrics = vae_loss(vae, clips, kl_weight=1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(metrics["kl"]) and metrics["rec"] > 0
    with torch.no_grad():
        after = psnr(vae.decode(vae.encode(clips).mode()), clips).item()
    print(f"tiny VAE: {before:.1f} -> {after:.1f} dB in {STEPS} steps, {time.time() - start:.1f} s")
    assert after > 22.0


STEPS, LR = 300, 5e-4
