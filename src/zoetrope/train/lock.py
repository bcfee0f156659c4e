"""One trainer per run directory: `RUN_DIR/.lock`, held for the whole run.

The lock is an exclusive `flock` on `RUN_DIR/.lock`, a file that holds the holder's pid (for the
message a second trainer prints). The kernel drops a flock when its process dies, however it dies
(SIGKILL included), so a lock left behind by a dead process is simply taken over by the next
trainer: no liveness guess from a pid that may since have been reused. On a clean exit the file
is removed, and so is a run directory that the lock alone had created. Under torchrun only rank 0
takes the lock; its verdict is broadcast so every rank refuses or goes on together.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from .distributed import Dist, from_main

LOCK_NAME = ".lock"


class RunLocked(UserError):
    """Another live process is training into the same run directory."""


def _acquire(path: Path) -> int:
    """An open descriptor of `path` holding its exclusive flock; raises RunLocked if taken."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(f"{path.parent} is in use by another zoetrope train (pid {holder}); "
                            f"wait for it to finish, stop it, or use another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder removed between our open and our flock
            return fd
        os.close(fd)


@contextmanager
def run_lock(run_dir: str | Path, d: Dist | None = None) -> Iterator[None]:
    """Hold the lock of `run_dir` (created if missing) for the `with` block."""
    run_dir = Path(run_dir)
    main = d is None or d.main
    created, fd, error = not run_dir.exists(), None, None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = _acquire(run_dir / LOCK_NAME)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except RunLocked as e:
            error = str(e)
    error = from_main(error) if d is not None else error
    if error:
        raise RunLocked(error)
    try:
        yield
    finally:
        if fd is not None:
            (run_dir / LOCK_NAME).unlink(missing_ok=True)  # before the unlock: see `_acquire`
            os.close(fd)
            if created and not any(run_dir.iterdir()):
                run_dir.rmdir()
