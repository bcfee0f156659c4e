"""The run-directory lock: one trainer per --out; a dead holder's lock is taken over."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from zoetrope.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
ONE_STEP = ['--train.stages=["vae"]', "--train.vae.steps=1", "--train.vae.batch_size=1", "--quiet"]


def hold_lock(run: Path) -> subprocess.Popen:
    """Another process that takes the lock of `run` and keeps it until killed."""
    code = ("import sys, time; from zoetrope.train.lock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_trainer_on_the_same_run_refuses_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        assert main(["train", str(TINY), "--out", str(run), *ONE_STEP]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pid {holder.pid}" in err[0] and str(run) in err[0]
    assert not (run / "vae").exists() and not (run / "config.json").exists()


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    from zoetrope.train.lock import run_lock
    run = tmp_path / "run"
    holder = hold_lock(run)
    holder.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays, naming its pid
    holder.wait()
    assert (run / ".lock").read_text().split() == [str(holder.pid)]
    with run_lock(run):
        assert (run / ".lock").read_text().split() == [str(os.getpid())]
        with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
            with run_lock(run):  # the same process, a second time: refused too
                pass
    assert not (run / ".lock").exists()
    assert main(["train", str(TINY), "--out", str(run), *ONE_STEP]) == 0
