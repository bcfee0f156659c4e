"""Smoke tests of every CLI entry point: `main(argv)` is called in-process."""

import errno
import json
import subprocess
from pathlib import Path
import sys

import pytest

from zoetrope.cli import main
from zoetrope.errors import UserError


def test_info_json(capsys):
    assert main(["info", "DiT-XL/2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert round(info["params"] / 1e6) == 675 and abs(info["gflops"] - 118.64) < 0.05


def test_info_text_and_video_preset(capsys):
    assert main(["info", "sora-3B"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sora-3B: 3") and "GFLOPs" in out


def test_info_unknown_preset_is_one_line_error(capsys):
    assert main(["info", "DiT-Q/2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "known presets: DiT-S/2" in err and "Traceback" not in err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "zoetrope.cli", "info", "tiny", "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["preset"] == "tiny"


def test_critique_ground_truth_wrong_prompt_and_bad_prompt(tmp_path, capsys):
    from zoetrope.data.shapes import render_clip
    from zoetrope.data.video import write_video

    clip = render_clip(17, 64, 64, color="red", shape="circle", direction="right", seed=3)
    path = write_video(tmp_path / "clip.mp4", clip.frames, 8)
    assert main(["critique", str(path), "--prompt", "a red circle moving right", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["passed"] is True
    assert main(["critique", str(path), "--prompt", "a blue circle moving right"]) == 1
    capsys.readouterr()
    assert main(["critique", str(path), "--prompt", "a dog barking"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoetrope critique: error:") and err.count("\n") == 1


def test_eval_writes_a_report(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_pipeline import tiny_pipeline

    tiny_pipeline().save_pretrained(tmp_path / "model")
    args = ["eval", "--model", str(tmp_path / "model"), "--clips", "3", "--steps", "1",
            "--size", "5x16x16", "--out", str(tmp_path / "report"), "--json"]
    assert main(args) == 0
    totals = json.loads(capsys.readouterr().out)
    assert totals["clips"] == 3
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(report["clips"]) == 3 and (tmp_path / "report" / "contact_sheet.png").is_file()
    assert main(["eval", "--model", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("error", [
    UserError("--size must look like 17x64x64"),
    FileNotFoundError(2, "No such file or directory", "clips/missing.mp4"),
    PermissionError(13, "Permission denied", "/root/out.mp4"),
    IsADirectoryError(21, "Is a directory", "outputs"),
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_user_errors_are_one_line_with_exit_2(monkeypatch, capsys, error):
    def fail(name):
        raise error

    monkeypatch.setattr("zoetrope.config.dit_preset", fail)
    assert main(["info", "DiT-S/2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoetrope info: error:") and err.count("\n") == 1


@pytest.mark.parametrize("error", [KeyError("dim"), ValueError("shapes differ"), TypeError("x"),
                                   OSError(errno.EIO, "Input/output error")])
def test_internal_bugs_keep_their_traceback(monkeypatch, capsys, error):
    # A plain ValueError/KeyError/TypeError or an unexpected OS error is zoetrope's bug: it must
    # propagate (the interpreter prints the traceback and exits 1), not pass as bad input.
    def fail(name):
        raise error

    monkeypatch.setattr("zoetrope.config.dit_preset", fail)
    with pytest.raises(type(error)):
        main(["info", "DiT-S/2"])
    assert "error:" not in capsys.readouterr().err


def test_console_script_shows_the_traceback_of_a_bug(tmp_path):
    # A package whose dit_preset raises KeyError, shadowing nothing but that one function.
    code = ("import sys, zoetrope.config as c; c.dit_preset = lambda name: {}['dim']; "
            "from zoetrope.cli import main; sys.exit(main(['info', 'DiT-S/2']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" in run.stderr and "KeyError: 'dim'" in run.stderr
