"""The one error type for what a user can cause, and the one way zoetrope writes a file.

`UserError` covers everything a user can fix: a bad setting, a missing or corrupt file, an
impossible size. The CLI prints such an error as one line and exits non-zero; any other exception
is a bug and keeps its traceback. It subclasses ValueError so callers that catch ValueError keep
working.

`atomic_write` is the only place that writes a file into place: the content goes to a temporary
file beside the target and is renamed over it when complete, so a crash, a full disk or SIGKILL
never leaves a half-written file (the old one, if any, stays intact). `atomic_write_dir` does the
same for a whole directory (a pipeline directory, a training checkpoint).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Callable


class UserError(ValueError):
    """Something the user can fix (message is one line, naming the setting, file or value)."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Run `write(tmp)` on a temporary path beside `path`, then rename it into place.

    The temporary name keeps the suffix (some writers pick the format from it) and starts with a
    dot; it is removed if `write` fails. The parent directory is created. Returns `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_dir(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Run `write(tmp)` on a new temporary directory beside `path`, then rename it into place.

    An existing `path` is replaced only once `write` has finished. The temporary directory
    (`.NAME.tmp-XXXX`) is removed if `write` fails. The parent directory is created. Returns `path`.
    """
    path = Path(os.path.abspath(path))  # "." and "dir/" have a name to put a sibling beside
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        tmp.mkdir()
        write(tmp)
        old = _rename_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _rename_into_place(tmp: Path, path: Path) -> Path | None:
    """Rename directory `tmp` to `path`; an existing `path` is moved aside and returned.

    A directory cannot be renamed over a non-empty one, so the old one first steps aside
    (`.NAME.old-XXXX`); if the second rename then fails, it is put back.
    """
    if not path.exists():
        tmp.rename(path)
        return None
    old = path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
    path.rename(old)
    try:
        tmp.rename(path)
    except BaseException:
        old.rename(path)
        raise
    return old
