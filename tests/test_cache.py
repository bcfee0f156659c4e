"""Latent caches: exact read-back, resume after an interruption, refusals, the CLI, DiT training."""

import json
from pathlib import Path

import pytest
import torch

from zoetrope.cli import main
from zoetrope.config import ConfigError, load_recipe
from zoetrope.data import cache as cache_module
from zoetrope.data.cache import CacheError, LatentCache, encode_dataset
from zoetrope.data.shapes import ShapesWorld
from zoetrope.data.factory import build_dataset
from zoetrope.train import stage_loop, to_video, train
from zoetrope.vae import CausalVAE

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"
SIZES = [(5, 32, 32), (1, 32, 48)]  # the tiny recipe's sizes; seed 3 mixes both in 7 samples


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A random VAE with the tiny recipe's [vae] config, so tiny DiT runs can load it."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("vae")
    CausalVAE(load_recipe(TINY).vae).save_pretrained(directory)
    return directory


@pytest.fixture
def vae(vae_dir):
    return CausalVAE.from_pretrained(vae_dir)


def world() -> ShapesWorld:
    return ShapesWorld(sizes=SIZES, seed=3)


def encode(vae, out, count=7, **kwargs):
    # Shards of 3 and batches of 2: full batches, leftovers and a short last shard all happen.
    return encode_dataset(kwargs.pop("dataset", None) or world(), vae, out, count, batch_size=2,
                          shard_size=3, progress=False, **kwargs)


def test_cache_reads_back_what_the_vae_encodes(vae, tmp_path, monkeypatch):
    batches, encode_latent = [], vae.encode_latent
    monkeypatch.setattr(vae, "encode_latent",
                        lambda video: (batches.append(tuple(video.shape)), encode_latent(video))[1])
    encode(vae, tmp_path)
    # Sizes: shard 0 holds three 1x32x48 clips, shards 1 and 2 four 5x32x32 ones; batches of 2.
    assert [b[0] for b in batches] == [2, 1, 2, 1, 1] and batches[0][2:] == (1, 32, 48)
    cache = LatentCache(tmp_path)
    assert len(cache) == 7 and cache.is_latent and cache.latent_channels == 4
    assert sorted(cache.sizes) == sorted(SIZES)
    source = world()
    for i in range(7):
        frames, caption = source.sample(i)
        with torch.no_grad():
            expected = vae.encode_latent(to_video(frames))[0]  # one clip at a time
        latent, cached_caption = cache.sample(i)
        assert cached_caption == caption
        assert latent.dtype == torch.float32
        assert latent.shape == expected.shape == vae.latent_shape(*frames.shape[:3])
        torch.testing.assert_close(latent, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(cache.sample(7 + 5)[0], cache.sample(5)[0])  # indices wrap around
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_interrupted_encode_resumes_to_the_same_cache(vae, tmp_path, monkeypatch):
    encode(vae, tmp_path / "reference", count=9)
    write_shard = cache_module._write_shard

    def crash_after_first_shard(out, shard, tensors, meta):
        if shard > 0:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C while shard 1 was written
        write_shard(out, shard, tensors, meta)

    with monkeypatch.context() as m:
        m.setattr(cache_module, "_write_shard", crash_after_first_shard)
        with pytest.raises(KeyboardInterrupt):
            encode(vae, tmp_path / "run")
    with pytest.raises(CacheError, match="incomplete; rerun"):
        LatentCache(tmp_path / "run")

    source, read = world(), []
    sample = source.sample
    monkeypatch.setattr(source, "sample", lambda i: (read.append(i), sample(i))[1])
    encode(vae, tmp_path / "run", dataset=source)
    assert read == [3, 4, 5, 6]  # shard 0 was kept, not encoded again
    read.clear()
    encode(vae, tmp_path / "run", count=9, dataset=source)  # a larger count extends the cache
    assert read == [6, 7, 8]  # only the last shard, which was short, is redone

    run, reference = LatentCache(tmp_path / "run"), LatentCache(tmp_path / "reference")
    assert len(run) == len(reference) == 9
    for i in range(9):
        (a, caption_a), (b, caption_b) = run.sample(i), reference.sample(i)
        assert caption_a == caption_b and torch.equal(a, b)
    assert not list((tmp_path / "run").glob(".*"))


def test_a_cache_made_differently_is_refused(vae, vae_dir, tmp_path):
    encode(vae, tmp_path, count=2)
    other = CausalVAE.from_pretrained(vae_dir)
    other.config.scaling_std = 2.0
    with pytest.raises(CacheError, match=r"another VAE \(differs in scaling_std\)"):
        encode(other, tmp_path, count=2)
    with pytest.raises(CacheError, match=r"another dataset \(differs in seed\)"):
        encode(vae, tmp_path, count=2, dataset=ShapesWorld(sizes=SIZES, seed=4))
    assert json.loads((tmp_path / "cache.json").read_text())["vae"]["scaling_std"] == 1.0
    assert len(LatentCache(tmp_path)) == 2  # the refusals left the cache as it was
    with pytest.raises(CacheError, match="no latent cache"):
        LatentCache(tmp_path / "missing")


def test_cli_encode(vae_dir, tmp_path, capsys):
    out = tmp_path / "cache"
    argv = ["encode", "shapes", "--out", str(out), "--vae", str(vae_dir), "--count", "6",
            "--size", "5x32x32"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert str(out) in captured.out and "6/6" in captured.err  # where it went; the progress bar
    cache = LatentCache(out)
    assert len(cache) == 6 and all(cache.sample(i)[0].shape == (4, 2, 8, 8) for i in range(6))
    assert cache.sample(4)[1] == ShapesWorld(sizes=[(5, 32, 32)]).sample(4)[1]
    assert main(argv + ["--quiet"]) == 0  # a finished cache: the rerun only checks it

    for extra, message in [(["--size", "6x32x32"], "6x32x32: num_frames=6 is not 1 + 4k"),
                           (["--size", "5x30x32"], "height=30 is not a multiple of 4"),
                           (["--size", "5x32"], "FRAMESxHEIGHTxWIDTH"),
                           (["--vae", str(tmp_path / "nope")], "is not a directory"),
                           (["--count", "0"], "--count must be at least 1")]:
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("zoetrope encode: error:") and err.count("\n") == 1, err
        assert message in err, err
    assert main(["encode", "shape", "--out", str(out), "--vae", str(vae_dir)]) == 2
    assert "DATASET must be shapes, mnist or a caption folder" in capsys.readouterr().err


def test_dit_trains_on_a_cache_without_the_vae_encoder(vae_dir, vae, tmp_path, monkeypatch):
    encode_dataset(ShapesWorld(sizes=SIZES, seed=0), vae, tmp_path / "cache", 8, progress=False)
    overrides = ['--train.stages=["dit"]', f"--train.dit.vae_path={vae_dir}", "--data.dataset=cache",
                 f"--data.path={tmp_path / 'cache'}", "--train.dit.steps=2"]

    def no_encoding(*args, **kwargs):
        raise AssertionError("the VAE encoder ran on cached latents")

    monkeypatch.setattr(CausalVAE, "encode", no_encoding)
    # A token budget makes the trainer count each sample's tokens from its latent shape.
    recipe = load_recipe(TINY, overrides + ["--train.dit.token_budget=48"])
    final = train(recipe, tmp_path / "run", progress=False)
    assert (final / "pipeline.json").is_file() and (final / "dit" / "model.safetensors").is_file()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)

    with pytest.raises(ConfigError, match="not a VAE"):
        stage_loop(load_recipe(TINY, overrides + ['--train.stages=["vae"]']), "vae", tmp_path / "v")
    other = tmp_path / "other-vae"
    CausalVAE(load_recipe(TINY, ["--vae.scaling_std=3"]).vae).save_pretrained(other)
    with pytest.raises(ConfigError, match="another VAE than the DiT stage's"):
        stage_loop(load_recipe(TINY, overrides + [f"--train.dit.vae_path={other}"]), "dit",
                   tmp_path / "o")


def test_train_latent_cache_encodes_once_and_trains_on_it(vae_dir, vae, tmp_path, monkeypatch):
    dit = ['--train.stages=["dit"]', f"--train.dit.vae_path={vae_dir}"]
    recipe = load_recipe(TINY, [*dit, "--train.dit.steps=2", "--train.dit.latent_cache=3"])
    trainer = stage_loop(recipe, "dit", tmp_path / "run", progress=False)
    assert isinstance(trainer.dataset, LatentCache) and len(trainer.dataset) == 3
    # what the cache stands for: the recipe's own samples
    frames_world = build_dataset(recipe.data, recipe.train.dit.seed)
    for index in range(5):  # 3 and 4 wrap around to 0 and 1 (a second epoch)
        frames, caption = frames_world.sample(index % 3)
        latent, cached_caption = trainer.dataset.sample(index)
        assert cached_caption == caption
        torch.testing.assert_close(latent, vae.encode_latent(to_video(frames))[0])
    trainer.run()

    def no_encoding(*args, **kwargs):
        raise AssertionError("the VAE encoder ran again on a resumed run")

    monkeypatch.setattr(CausalVAE, "encode", no_encoding)  # resuming reuses the finished cache
    more = load_recipe(TINY, [*dit, "--train.dit.steps=3", "--train.dit.latent_cache=3"])
    assert (train(more, tmp_path / "run", progress=False) / "dit" / "model.safetensors").is_file()

    with pytest.raises(ConfigError, match="must be >= 0"):
        load_recipe(TINY, [*dit, "--train.dit.latent_cache=-1"])
    # A recipe with a latent cache also trains on a ready-made cache (data.dataset = "cache") as is.
    ready = [*dit, "--train.dit.latent_cache=5", "--data.dataset=cache",
             f"--data.path={tmp_path / 'run' / 'latents'}"]
    trainer = stage_loop(load_recipe(TINY, ready), "dit", tmp_path / "ready", progress=False)
    assert len(trainer.dataset) == 3 and not (tmp_path / "ready" / "latents").exists()
    # a latent cache is a DiT stage setting: the VAE stage has none
    with pytest.raises(ConfigError, match="unknown key 'train.vae.latent_cache'"):
        load_recipe(TINY, ['--train.stages=["vae"]', "--train.vae.latent_cache=3"])


def _folder_with_a_corrupt_clip(root: Path) -> None:
    """good.mp4, and cut.mp4 whose header probes fine but whose frames stop decoding at the 4th."""
    import numpy as np

    from zoetrope.data.video import write_video
    rng = np.random.default_rng(0)
    root.mkdir()
    write_video(root / "good.mp4", rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), fps=10)
    data = write_video(root / "cut.mp4", rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
                       fps=10).read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 4])
    lines = [json.dumps({"video": name, "caption": f"clip {name}"}) for name in ("good.mp4", "cut.mp4")]
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")


def test_encode_never_fills_a_corrupt_clips_slot_with_another(vae_dir, tmp_path, capsys):
    folder, out = tmp_path / "clips", tmp_path / "cache"
    _folder_with_a_corrupt_clip(folder)
    args = ["encode", str(folder), "--out", str(out), "--vae", str(vae_dir), "--size", "5x32x32",
            "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut.mp4" in err[0] and err[0].startswith("zoetrope encode: error:")
    with pytest.raises(CacheError, match="incomplete"):
        LatentCache(out)
    # the user drops the bad clip and reruns the same command: nothing was encoded, so it goes on
    (folder / "captions.jsonl").write_text(json.dumps({"video": "good.mp4", "caption": "good"}))
    assert main(args) == 0
    cache = LatentCache(out)
    assert len(cache) == 1 and cache.captions == ["good"]
    (folder / "captions.jsonl").write_text(json.dumps({"video": "good.mp4", "caption": "new"}))
    capsys.readouterr()
    assert main(args) == 2  # now samples are encoded: another listing is another dataset
    assert "another dataset (differs in listing)" in capsys.readouterr().err
