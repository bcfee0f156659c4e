"""Configs: presets, TOML recipes, type-checked overrides, clear errors."""

import pytest

from zoetrope.config import ConfigError, DiTConfig, Recipe, apply_overrides, dit_preset, load_recipe


def test_overrides_are_parsed_and_type_checked():
    recipe = apply_overrides(Recipe(), ["--train.steps=7", "--train.lr=1e-3", "--dit.qk_norm=false",
                                        "--dit.patch_size=[1, 4, 4]", "--text.kind=minilm"])
    assert recipe.train.steps == 7 and recipe.train.lr == 1e-3 and recipe.dit.qk_norm is False
    assert recipe.dit.patch_size == (1, 4, 4) and recipe.text.kind == "minilm"
    assert apply_overrides(Recipe(), ["--train.lr=1"]).train.lr == 1.0  # int accepted for float
    with pytest.raises(ConfigError, match="train.steps must be int"):
        apply_overrides(Recipe(), ["--train.steps=many"])
    with pytest.raises(ConfigError, match="must have 3 items"):
        apply_overrides(Recipe(), ["--dit.patch_size=[1, 2]"])


def test_unknown_keys_name_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'train.stepz'.*steps"):
        apply_overrides(Recipe(), ["--train.stepz=3"])
    with pytest.raises(ConfigError, match=r"recipe has vae, dit, text"):
        apply_overrides(Recipe(), ["--trian.steps=3"])
    with pytest.raises(ConfigError, match="--section.key=value"):
        apply_overrides(Recipe(), ["--train.steps"])


def test_toml_recipe(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('preset = "tiny"\n[train]\nsteps = 5\n[data]\nsizes = [[1, 32, 32], [5, 32, 48]]\n')
    recipe = load_recipe(path, ["--train.lr=0.01"])
    assert recipe.dit == dit_preset("tiny")
    assert recipe.train.steps == 5 and recipe.train.lr == 0.01
    assert recipe.data.sizes == [[1, 32, 32], [5, 32, 48]]
    path.write_text("[train]\nstepz = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key \[train\] 'stepz'; valid keys: model, steps"):
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
