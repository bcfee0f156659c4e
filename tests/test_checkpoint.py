"""Training checkpoints: written as a whole directory (`errors.atomic_write_dir`) or not at all."""

import pytest
import torch

from zoetrope import checkpoint as ckpt


def save(run, step, value, keep=3):
    weights = {"w": torch.full((2,), float(value))}
    return ckpt.save_checkpoint(run, step, weights, weights, {"state": {}, "param_groups": []},
                                {"samples": step}, keep)


def test_full_disk_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    save(tmp_path, 2, 2.0)
    real = ckpt.save_file

    def full(tensors, path):
        if path.endswith("ema.safetensors"):
            raise OSError(28, "No space left on device")
        return real(tensors, path)

    monkeypatch.setattr(ckpt, "save_file", full)
    for step in (2, 4):  # rewriting a checkpoint and writing a new one
        with pytest.raises(ckpt.CheckpointError, match=f"step {step}: No space.*step_00000002 is intact"):
            save(tmp_path, step, 9.0)
    assert [p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir()] == ["step_00000002"]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))["model"]["w"][0] == 2.0
    monkeypatch.undo()
    save(tmp_path, 2, 5.0)  # a complete save of the same step replaces it
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))["model"]["w"][0] == 5.0


def test_clean_partial_removes_what_a_killed_save_left(tmp_path):
    save(tmp_path, 1, 1.0)
    root = ckpt.checkpoint_dir(tmp_path)
    for name in (".step_00000002.tmp-1a2b3c4d", ".step_00000001.old-5e6f7a8b"):
        (root / name).mkdir()
        (root / name / "model.safetensors").write_bytes(b"half")
    ckpt.clean_partial(tmp_path)
    assert [p.name for p in root.iterdir()] == ["step_00000001"]
