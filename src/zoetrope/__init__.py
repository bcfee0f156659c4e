"""zoetrope: an open, trainable text-to-video system (video VAE + packed spacetime-patch DiT).

The names most users need are re-exported here; everything else lives in its module.
"""

from .dit import DiT
from .patches import Packed, pack, unpack

__version__ = "0.1.0"
__all__ = ["DiT", "Packed", "pack", "unpack", "__version__"]
