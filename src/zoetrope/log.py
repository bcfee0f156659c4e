"""Warnings, one line each, through one logger.

Everything zoetrope has to tell a user that is not an error (a skipped clip, a word the text
encoder does not know) goes through `warn`, which logs to the `zoetrope` logger at WARNING level
with newlines folded, so each warning is exactly one line. The CLI calls `configure()` once, after
which warnings print as `zoetrope: warning: <message>` on stderr. A Python caller who configures
nothing still sees them (logging's last-resort handler prints the bare message to stderr), and can
route or silence them like any other logger: `logging.getLogger("zoetrope")`.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("zoetrope")


def warn(message: str) -> None:
    """Log `message` as one warning line (newlines become spaces)."""
    logger.warning(" ".join(str(message).split("\n")))


class _StderrHandler(logging.Handler):
    """Prints `zoetrope: <level>: <message>` to whatever `sys.stderr` is at the time of the call
    (not at construction: tests swap it per test)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"zoetrope: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)
        except Exception:
            self.handleError(record)


def configure() -> None:
    """Print zoetrope's warnings as `zoetrope: warning: <message>` on stderr (idempotent)."""
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler(logging.WARNING))
    logger.setLevel(logging.WARNING)
