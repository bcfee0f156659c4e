"""`zoetrope sweep`: the tiny grid end to end, resume after a failed run, bad grids refused."""

import json
from pathlib import Path

import pytest

from zoetrope.cli import main
from zoetrope.train.loop import Loop

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
GRID = ROOT / "configs" / "tiny-grid.toml"
NAMES = ["tiny_steps10", "tiny_steps20", "tiny-wide_steps10", "tiny-wide_steps20"]


def sweep_cli(out: Path, grid: Path = GRID, *extra: str) -> int:
    return main(["sweep", str(TINY), "--grid", str(grid), "--out", str(out), "--quiet", *extra])


def without_wall_times(report: dict) -> dict:
    """scaling.json less what depends on the clock."""
    for run in report["runs"]:
        run.pop("wall_time_s", None)
    return report


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The tiny grid, swept once without interruption."""
    out = tmp_path_factory.mktemp("sweep") / "clean"
    assert sweep_cli(out) == 0
    return out


def test_tiny_grid_end_to_end(clean):
    report = json.loads((clean / "scaling.json").read_text())
    runs = {r["name"]: r for r in report["runs"]}
    assert list(runs) == NAMES and report["failed"] == []
    for name, run in runs.items():
        assert (clean / "runs" / name / "final" / "pipeline.json").is_file()
        assert run["heldout_loss"] > 0 and len(run["heldout_loss_by_t"]) == 4
        assert run["wall_time_s"] > 0
    # FLOPs: the counter's forward x 3 x batch x steps; twice the steps, twice the compute
    small, wide = runs["tiny_steps10"], runs["tiny-wide_steps10"]
    assert small["train_flops"] == 3 * small["forward_flops_per_sample"] * 4 * 10
    assert runs["tiny_steps20"]["train_flops"] == 2 * small["train_flops"]
    assert wide["params"] > small["params"] == runs["tiny_steps20"]["params"]
    assert wide["forward_flops_per_sample"] > small["forward_flops_per_sample"]
    fit = report["fits"]["heldout_loss"]
    assert fit["frontier"] and fit["frontier"][0] == "tiny_steps10"  # the cheapest run
    assert "## heldout_loss against training compute" in (clean / "scaling.md").read_text()
    pytest.importorskip("matplotlib")
    assert (clean / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_held_out_loss_uses_the_exported_ema_weights(clean, tmp_path):
    """The same run measured again from its final/ gives the same loss; other weights do not."""
    from zoetrope.config import load_recipe
    from zoetrope.pipeline import TextToVideoPipeline
    from zoetrope.sweep import HeldOut, heldout_loss, heldout_set

    spec = HeldOut(clips=4, times=4)
    latents, captions = heldout_set(load_recipe(TINY), spec, clean / "vae" / "final" / "vae")
    run = json.loads((clean / "runs" / "tiny_steps20" / "result.json").read_text())
    pipe = TextToVideoPipeline.from_pretrained(clean / "runs" / "tiny_steps20" / "final")
    assert heldout_loss(pipe, latents, captions, spec) == run["heldout_loss_by_t"]
    other = TextToVideoPipeline.from_pretrained(clean / "runs" / "tiny_steps10" / "final")
    assert heldout_loss(other, latents, captions, spec) != run["heldout_loss_by_t"]


def test_resume_after_a_run_fails_midway(clean, tmp_path, monkeypatch, capsys):
    """One run dies at step 15 of 20 (its checkpoint is at 10): the others finish and the sweep
    reports it; the rerun skips the finished runs, resumes that one from its checkpoint, and ends
    with the same scaling.json as a sweep never interrupted."""
    after_step = Loop.after_step

    def dies(self, *args, **kwargs):
        after_step(self, *args, **kwargs)
        if self.run_dir.name == "tiny-wide_steps20" and self.step == 15:
            raise RuntimeError("killed midway")

    out = tmp_path / "sweep"
    monkeypatch.setattr(Loop, "after_step", dies)
    assert sweep_cli(out) == 1
    first = json.loads((out / "scaling.json").read_text())
    assert first["failed"] == ["tiny-wide_steps20"]
    assert "killed midway" in [r for r in first["runs"] if "error" in r][0]["error"]
    assert "tiny-wide_steps20: failed: RuntimeError: killed midway" in capsys.readouterr().err
    monkeypatch.setattr(Loop, "after_step", after_step)
    assert sweep_cli(out) == 0
    printed = capsys.readouterr().out
    assert printed.count("done before, skipped") == 3
    assert "tiny-wide_steps20/checkpoints/step_00000010 (step 10)" in printed
    final = without_wall_times(json.loads((out / "scaling.json").read_text()))
    assert final == without_wall_times(json.loads((clean / "scaling.json").read_text()))


@pytest.mark.parametrize("grid, message", [
    ('sizes = ["DiT-Q/2"]\nsteps = [10]', "unknown preset 'DiT-Q/2'"),
    ('sizes = ["tiny"]\nsteps = [10]\nwidth = [3]', "unknown key 'width'"),
    ('sizes = [{ preset = "tiny", heads = 2 }]\nsteps = [10]', "unknown key 'heads'"),
    ('sizes = ["tiny"]\nsteps = [10]\n[heldout]\nnoise = 1', "unknown key [heldout] 'noise'"),
    ('sizes = []\nsteps = [10]', "the grid is empty"),
    ('sizes = ["tiny"]', "the grid is empty"),
    ('sizes = ["tiny"]\nsteps = [0]', "grid run tiny_steps0: train.dit.steps must be >= 1"),
    ('sizes = ["tiny"]\nsteps = [10.5]', "steps must list ints"),
    ('sizes = [{ preset = "tiny", dim = 65536, depth = 64 }]\nsteps = [10]',
     "would need about"),
])
def test_bad_grids_are_one_line_errors_before_any_run(tmp_path, capsys, grid, message):
    path = tmp_path / "grid.toml"
    path.write_text(grid)
    out = tmp_path / "sweep"
    assert sweep_cli(out, path) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # nothing started


def test_memory_refusal_gives_the_estimate(tmp_path, capsys):
    path = tmp_path / "grid.toml"
    path.write_text('sizes = [{ name = "huge", preset = "tiny", dim = 65536, depth = 64 }]\n'
                    'steps = [10]')
    assert sweep_cli(tmp_path / "sweep", path) == 2
    err = capsys.readouterr().err
    # 64 blocks of ~ 16 D^2 parameters at 20 bytes each: ~ 80 TiB
    gib = float(err.split("would need about ")[1].split(" GiB")[0])
    assert 50 * 2**10 < gib < 150 * 2**10
