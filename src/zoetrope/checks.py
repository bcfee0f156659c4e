"""Checks of the values a user hands zoetrope (Python API arguments, CLI flags).

Each check returns the value as a plain Python int or float, or raises a one-line `UserError`
naming the setting: `name` is what the user wrote (`guidance_scale` from Python, `--cfg` from the
CLI). bool is not taken for a number (True is an int to Python, never meant as a seed or a step
count); numpy scalars are (they register as numbers.Integral / numbers.Real).
"""

from __future__ import annotations

import math
import numbers

from .errors import UserError

SEED_MAX = 2**63 - 1  # a seed is a non-negative int64, the same on every platform and in JSON
# Generation limits: far past any useful value (DDPM trains 1000 steps; the bundled model samples
# 20 + 2 restarts), low enough that a typo cannot ask for days of work or a time grid that
# overflows (each restart round also draws a latent-sized noise tensor up front).
MAX_STEPS = 10_000
MAX_RESTARTS = 100


def integer(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high] (None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise UserError(f"{name} must be {_range(low, high)}, got {value}")
    return value


def real(name: str, value: object, low: float | None = None, high: float | None = None) -> float:
    """`value` as a finite float in [low, high] (None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise UserError(f"{name} must be {_range(low, high)}, got {value}")
    return value


def seed(name: str, value: object) -> int:
    """A seed: an int in 0 .. 2**63 - 1."""
    return integer(name, value, 0, SEED_MAX)


def _range(low: float | None, high: float | None) -> str:
    """'at least 1', 'at most 8' or 'between 0 and 9223372036854775807'."""
    if high is None:
        return f"at least {low}"
    if low is None:
        return f"at most {high}"
    return f"between {low} and {high}"
