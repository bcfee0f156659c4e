"""Training's conditioning masks: which latent frames a sample gets given, and the DiT task's keep."""

import pytest
import torch

from zoetrope.config import GIVEN_KINDS, ConfigError, load_recipe
from zoetrope.train.masks import draw_given_frames, given_frames

from test_train import TINY, dit_recipe, vae_dir  # noqa: F401 (a fixture)


def frames_of(kind: str, t: int, draws: int = 200) -> set[tuple[bool, ...]]:
    g = torch.Generator().manual_seed(0)
    return {tuple(given_frames(kind, t, g).tolist()) for _ in range(draws)}


def test_each_kind_gives_what_it_names_and_leaves_frames_to_generate():
    T, F = True, False
    assert frames_of("first", 4) == {(T, F, F, F)}
    assert frames_of("last", 4) == {(F, F, F, T)}
    assert frames_of("prefix", 4) == {(T, F, F, F), (T, T, F, F), (T, T, T, F)}
    assert frames_of("suffix", 4) == {(F, F, F, T), (F, F, T, T), (F, T, T, T)}
    assert frames_of("ends", 4) == {(T, F, F, T), (T, T, F, T), (T, F, T, T)}
    for kind in GIVEN_KINDS:  # too short for the kind: nothing given, never everything
        assert frames_of(kind, 1) == {(F,)}
        assert not any(all(m) for t in (2, 3, 5) for m in frames_of(kind, t))
    with pytest.raises(ValueError, match="unknown kind"):
        given_frames("middle", 4, torch.Generator())


def test_the_share_is_drawn_from_the_samples_generator():
    def draw(share, seed):
        return draw_given_frames(torch.Generator().manual_seed(seed), 5, share, ["prefix", "last"])

    assert not any(draw(0.0, s).any() for s in range(50))
    assert all(draw(1.0, s).any() for s in range(50))
    half = sum(bool(draw(0.5, s).any()) for s in range(400))
    assert 160 < half < 240
    assert all(torch.equal(draw(0.5, s), draw(0.5, s)) for s in range(20))  # same seed, same mask
    g = torch.Generator().manual_seed(3)
    before = g.get_state()
    draw_given_frames(g, 5, 0.0, ["first"])
    assert torch.equal(g.get_state(), before)  # share 0 draws nothing: old recipes are unchanged


def test_recipe_checks_the_kinds_and_one_of_the_two_options():
    with pytest.raises(ConfigError, match="given_kinds must name some of"):
        load_recipe(TINY, ['--train.dit.given_kinds=["middle"]'])
    with pytest.raises(ConfigError, match="first_frame_cond or train.dit.given_share"):
        load_recipe(TINY, ["--train.dit.first_frame_cond=0.5", "--train.dit.given_share=0.5"])


def test_the_dit_task_keeps_the_tokens_of_given_frames(vae_dir, tmp_path):  # noqa: F811
    from zoetrope.patches import pack
    from zoetrope.train import stage_loop

    recipe = dit_recipe(vae_dir, "--train.dit.given_share=1", '--train.dit.given_kinds=["suffix"]')
    task = stage_loop(recipe, "dit", tmp_path, progress=False).task
    items = [(i, (torch.randn(4, 3, 2, 2), "a red circle")) for i in range(8)]
    packed = pack([latent for _, (latent, _) in items], task.module.dit.config.patch_size)
    keep = task.draw(items, packed)[2]
    assert torch.equal(keep, task.draw(items, packed)[2])
    frames = packed.positions[:, 0]
    for s in range(8):  # every sample: a suffix of whole latent frames, at least one left
        mine = packed.sample_ids == s
        given = set(frames[mine & keep].tolist())
        assert given and given == set(range(min(given), 3)) and min(given) >= 1
        assert not (mine & ~keep & (frames >= min(given))).any()


def test_continuing_clips_always_train_with_a_prefix_given(vae_dir, tmp_path):  # noqa: F811
    from zoetrope.patches import pack
    from zoetrope.train import stage_loop

    with pytest.raises(ConfigError, match="continuing_given needs continuing clips"):
        stage_loop(dit_recipe(vae_dir, "--train.dit.continuing_given=true"), "dit", tmp_path / "x",
                   progress=False)
    recipe = dit_recipe(vae_dir, "--train.dit.continuing_given=true", "--data.continuing=0.5",
                        '--data.sizes=[[5, 32, 32]]')  # given_share 0: the rest text-to-video
    task = stage_loop(recipe, "dit", tmp_path, progress=False).task
    world = task.dataset
    continuing = [i for i in range(40) if world.continues(i)]
    assert 8 <= len(continuing) <= 32
    assert all((world.clip(i).caption == "") == (i in continuing) for i in range(40))  # "empty"
    items = [(i, (torch.randn(4, 2, 2, 2), "a red circle")) for i in range(40)]
    packed = pack([latent for _, (latent, _) in items], task.module.dit.config.patch_size)
    keep = task.draw(items, packed)[2]
    frames = packed.positions[:, 0]
    for s in range(40):
        given = set(frames[(packed.sample_ids == s) & keep].tolist())
        assert given == ({0} if s in continuing else set())  # 2 latent frames: a prefix of 1
