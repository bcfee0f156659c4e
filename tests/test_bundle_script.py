"""scripts/bundle_model.py: a real command line (help, one-line errors), nothing written on error."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bundle_model.py"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_help_is_help():
    result = run("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: bundle_model.py")
    assert "SOURCE" in result.stdout and "--out" in result.stdout


def test_a_missing_source_is_one_line_and_writes_nothing(tmp_path):
    result = run(str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "nowhere" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
