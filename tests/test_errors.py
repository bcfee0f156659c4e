"""The one user-error type and the one atomic file write."""

import pytest

from zoetrope.errors import UserError, atomic_write, atomic_write_dir, atomic_write_text


def test_every_error_a_user_can_cause_is_a_user_error():
    from zoetrope.checkpoint import CheckpointError
    from zoetrope.config import ConfigError
    from zoetrope.data.cache import CacheError
    from zoetrope.data.video import VideoError
    from zoetrope.vae import VAEShapeError
    from zoetrope.weights import WeightsError

    for kind in (ConfigError, WeightsError, CheckpointError, VideoError, VAEShapeError, CacheError):
        assert issubclass(kind, UserError), kind
    assert issubclass(UserError, ValueError)  # callers catching ValueError keep working


def test_user_input_validation_raises_user_errors():
    import torch

    from zoetrope.critic import parse_prompt
    from zoetrope.patches import pack

    with pytest.raises(UserError, match="not divisible by patch size"):
        pack([torch.zeros(3, 1, 3, 4)], (1, 2, 2))
    with pytest.raises(UserError, match="cannot parse prompt"):
        parse_prompt("a dog barking")


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_text(path, "old")
    assert path.read_text() == "old"

    def half_then_crash(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old"  # the previous file intact...
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # ...and no temporary left
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


def test_atomic_write_dir_replaces_a_directory_only_when_complete(tmp_path):
    target = tmp_path / "out"
    atomic_write_dir(target, lambda tmp: (tmp / "a.txt").write_text("old"))

    def crash(tmp):
        (tmp / "a.txt").write_text("new")
        raise KeyboardInterrupt  # even an interrupt leaves the old directory and no temporary

    with pytest.raises(KeyboardInterrupt):
        atomic_write_dir(target, crash)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "a.txt").read_text() == "old"
    atomic_write_dir(target, lambda tmp: (tmp / "b.txt").write_text("new"))
    assert [p.name for p in target.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old one, set aside, is gone
