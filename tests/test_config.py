"""Configs: presets, TOML recipes, type-checked overrides, clear errors."""

from pathlib import Path

import pytest

from zoetrope.config import ConfigError, DiTConfig, Recipe, apply_overrides, dit_preset, load_recipe


def test_overrides_are_parsed_and_type_checked():
    recipe = apply_overrides(Recipe(), ["--train.dit.steps=7", "--train.dit.lr=1e-3", "--dit.qk_norm=false",
                                        "--dit.patch_size=[1, 4, 4]", "--text.kind=minilm"])
    assert recipe.train.dit.steps == 7 and recipe.train.dit.lr == 1e-3 and recipe.dit.qk_norm is False
    assert recipe.dit.patch_size == (1, 4, 4) and recipe.text.kind == "minilm"
    assert apply_overrides(Recipe(), ["--train.dit.lr=1"]).train.dit.lr == 1.0  # int accepted for float
    with pytest.raises(ConfigError, match="train.dit.steps must be int"):
        apply_overrides(Recipe(), ["--train.dit.steps=many"])
    with pytest.raises(ConfigError, match="must have 3 items"):
        apply_overrides(Recipe(), ["--dit.patch_size=[1, 2]"])


def test_unknown_keys_name_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'train.dit.stepz'.*steps"):
        apply_overrides(Recipe(), ["--train.dit.stepz=3"])
    with pytest.raises(ConfigError, match=r"recipe has vae, dit, text"):
        apply_overrides(Recipe(), ["--trian.steps=3"])
    with pytest.raises(ConfigError, match="--section.key=value"):
        apply_overrides(Recipe(), ["--train.steps"])


def test_toml_recipe(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('preset = "tiny"\n[train.dit]\nsteps = 5\n[data]\nsizes = [[1, 32, 32], [5, 32, 48]]\n')
    recipe = load_recipe(path, ["--train.dit.lr=0.01"])
    assert recipe.dit == dit_preset("tiny")
    assert recipe.train.dit.steps == 5 and recipe.train.dit.lr == 0.01
    assert recipe.data.sizes == [[1, 32, 32], [5, 32, 48]]
    path.write_text("[train.dit]\nstepz = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key \[train.dit\] 'stepz'; valid keys: steps, lr"):
        load_recipe(path)
    path.write_text("[trainer]\nsteps = 5\n")
    with pytest.raises(ConfigError, match=r"unknown section \[trainer\]"):
        load_recipe(path)
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(path)
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.toml")


def test_invalid_values():
    with pytest.raises(ConfigError, match="not divisible"):
        DiTConfig(dim=10, num_heads=3)
    with pytest.raises(ConfigError, match="pos_embed"):
        apply_overrides(Recipe(), ["--dit.pos_embed=learned"])


def test_recipe_stages_each_with_its_own_section(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[train]\nstages = ["vae", "dit"]\n[train.vae]\nsteps = 3\nkl_weight = 0.1\n'
                    '[train.dit]\nsteps = 4\nlatent_cache = 8\n')
    train = load_recipe(path).train
    assert train.stages == ["vae", "dit"] and (train.vae.steps, train.dit.steps) == (3, 4)
    assert train.vae.kl_weight == 0.1 and train.dit.latent_cache == 8
    assert train.vae.precision == train.dit.precision == "auto"  # chosen for the hardware
    for section, key in [("train.vae", "latent_cache"), ("train.dit", "kl_weight")]:
        with pytest.raises(ConfigError, match=f"unknown key '{section}.{key}'"):
            apply_overrides(Recipe(), [f"--{section}.{key}=1"])  # one stage's field, not the other's
    for stages in ['["dit", "vae"]', '["vae", "vae"]', "[]"]:
        with pytest.raises(ConfigError, match="train.stages must be"):
            apply_overrides(Recipe(), [f"--train.stages={stages}"])
    with pytest.raises(ConfigError, match="unknown stage 'gan'"):
        apply_overrides(Recipe(), ['--train.stages=["gan"]'])
    with pytest.raises(ConfigError, match="train.vae.precision must be 'auto', 'bf16' or 'fp32'"):
        apply_overrides(Recipe(), ["--train.vae.precision=fp16"])


def test_old_recipe_layouts_say_what_to_write_instead(tmp_path, capsys):
    path = tmp_path / "old.toml"
    cases = [('[train]\nmodel = "vae+dit"\nsteps = 5\n[vae_train]\nsteps = 2\n', r"\[vae_train\] is the "
              r"old recipe layout: put the VAE stage's settings in \[train.vae\]"),
             ('[train]\nmodel = "vae+dit"\n', r'old recipe layout: list the stages in \[train\] instead, '
              r'e.g. stages = \["vae", "dit"\]'),
             ("[train]\nlr = 0.1\n", r"train.lr is the old recipe layout: .*\[train.dit\] or \[train.vae\]")]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_recipe(path)
    with pytest.raises(ConfigError, match="train.model is the old recipe layout"):
        apply_overrides(Recipe(), ["--train.model=dit"])
    from zoetrope.cli import main
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.lr is the old recipe layout" in err
    assert not (tmp_path / "run").exists()


TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"


@pytest.mark.parametrize("override, setting", [
    ("--train.dit.batch_size=0", "train.dit.batch_size"),
    ("--train.dit.steps=0", "train.dit.steps"),
    ("--train.dit.lr=-0.001", "train.dit.lr"),
    ("--train.vae.lr=nan", "train.vae.lr"),
    ("--train.dit.lr=inf", "train.dit.lr"),
    ("--train.dit.warmup_steps=-1", "train.dit.warmup_steps"),
    ("--train.dit.weight_decay=-1", "train.dit.weight_decay"),
    ("--train.dit.min_lr_ratio=2", "train.dit.min_lr_ratio"),
    ("--train.dit.grad_clip=-1", "train.dit.grad_clip"),
    ("--train.dit.token_budget=-5", "train.dit.token_budget"),
    ("--train.vae.ema_decay=1.5", "train.vae.ema_decay"),
    ("--train.vae.keep_checkpoints=0", "train.vae.keep_checkpoints"),
    ("--train.vae.seed=-1", "train.vae.seed"),
    ("--train.vae.kl_weight=-1", "train.vae.kl_weight"),
    ("--train.vae.sizes=[[5, 32]]", "train.vae.sizes"),
    ("--train.dit.first_frame_cond=2", "train.dit.first_frame_cond"),
    ("--train.dit.preview_every=-1", "train.dit.preview_every"),
    ("--data.fps=-1", "data.fps"),
    ("--data.num_workers=-2", "data.num_workers"),
    ("--data.sizes=[[0, 32, 32]]", "data.sizes"),
    ("--diffusion.text_dropout=1.5", "diffusion.text_dropout"),
    ("--diffusion.num_train_timesteps=0", "diffusion.num_train_timesteps"),
    ("--diffusion.logit_std=0", "diffusion.logit_std"),
    ("--dit.num_heads=0", "dit.num_heads"),
    ("--text.max_length=0", "text.max_length"),
])
def test_out_of_range_values_are_refused_naming_the_setting(override, setting):
    with pytest.raises(ConfigError) as error:
        load_recipe(TINY, [override])
    message = str(error.value)
    assert message.startswith(f"{setting} must be ") and "\n" not in message


@pytest.mark.parametrize("kw, message", [
    ({"speed_range": [0.1]}, "data.speed_range"),
    ({"speed_range": [0.1, 0.05]}, "data.speed_range"),
    ({"object_scale": [0.2, 1.5]}, "data.object_scale"),
    ({"holdout": ["red circle"]}, "data.holdout"),
    ({"holdout": ["purple circle up"]}, "data.holdout"),
    ({"collide": True}, "data.collide needs data.two_objects"),
    ({"continuing": 1.5}, "data.continuing must be in"),
    ({"continuing": 0.3, "occluder": True}, "data.continuing must be 0 with"),
    ({"continuing_caption": "sideways"}, "data.continuing_caption must be"),
])
def test_generalization_split_settings_are_checked(kw, message):
    from zoetrope.config import DataConfig
    with pytest.raises(ConfigError, match=message) as e:
        DataConfig(**kw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parents[1] / "configs")
                                        .glob("*.toml") if not p.stem.endswith("-grid")))
def test_every_shipped_recipe_loads(name):
    recipe = load_recipe(Path(__file__).parents[1] / "configs" / name)
    assert recipe.train.stages  # a recipe that would train something
