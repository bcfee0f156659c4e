"""Smoke tests of every CLI entry point: `main(argv)` is called in-process."""

import json
import subprocess
import sys

from zoetrope.cli import main


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
