"""zoetrope: an open, trainable text-to-video system (video VAE + packed spacetime-patch DiT).

The names most users need are re-exported here; everything else lives in its module. They are
imported on first use, so that `import zoetrope.cli` (and `zoetrope --help`) does not load torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DiT", "Packed", "pack", "unpack", "__version__"]

_LAZY = {"DiT": "dit", "Packed": "patches", "pack": "patches", "unpack": "patches"}


def __getattr__(name: str) -> Any:
    """Import a re-exported name from its module on first access (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'zoetrope' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
