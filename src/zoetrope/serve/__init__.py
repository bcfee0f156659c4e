"""`zoetrope serve`: a local web studio for a pipeline directory.

A page of its own (plain HTML, CSS and JS in `static/`, nothing fetched from the network) to type
a prompt with the model's words suggested, set size, frames, steps, guidance and seed, watch the
DiT steps go by, play and download the clip, read the critic's verdict beside it and compare the
results made since the server started. `studio` owns the queue (one generation at a time) and
the output folder; `app` is the HTTP side, on the standard library's `http.server`: the page
polls a few JSON routes, so no web framework is needed and the `serve` extra installs nothing.

Image and clip uploads (animate, extend, loop, connect, edit) wait for the conditioning tasks.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .app import StudioServer
from .studio import Studio

__all__ = ["Studio", "StudioServer", "serve"]


def serve(model: str | Path, out: str | Path, host: str = "127.0.0.1", port: int = 7860,
          device: str = "cpu") -> None:
    """Load a pipeline directory and serve the studio on host:port until interrupted."""
    from ..pipeline import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(model).to(device)
    studio = Studio(pipe, out)
    try:
        server = StudioServer(studio, host, port)
    except OSError as e:  # port taken, host not on this machine: the user's to fix
        studio.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    print(f"zoetrope studio on {server.url} (clips go to {studio.out}); Ctrl-C stops it",
          flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        studio.close(timeout=5)
