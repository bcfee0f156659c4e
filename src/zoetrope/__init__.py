"""zoetrope: an open, trainable text-to-video system (video VAE + packed spacetime-patch DiT)."""

__version__ = "0.1.0"
