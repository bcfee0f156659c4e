"""The HTTP side of `zoetrope serve`: the standard library's threading HTTP server, no framework.

Routes (JSON unless named otherwise):

  GET    /                   the page (static/index.html); /static/<name>: its CSS and JS
  GET    /api/model          the model's defaults, sizes and vocabulary
  POST   /api/jobs           queue a generation: {"prompt": ..., "num_frames": ..., ...}
  GET    /api/jobs           every job since start (the page's gallery), newest first
  GET    /api/jobs/<id>      one job: state, queue position, DiT step of total, files, verdict
  DELETE /api/jobs/<id>      cancel it
  GET    /files/<name>       a clip the server wrote (byte ranges, so video elements can seek)

A bad request is a 4xx with {"error": "<one line>"}; the page shows the line. The server keeps
serving after any error: each request runs on its own thread, and generation runs on the studio's
one worker. Paths from a request are only ever keys into fixed tables (the static files, the
studio's own file names), never joined onto a directory.
"""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import UserError
from .studio import Studio

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {  # URL path -> (file in STATIC, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/studio.css": ("studio.css", "text/css; charset=utf-8"),
    "/static/studio.js": ("studio.js", "text/javascript; charset=utf-8"),
}
FILE_TYPES = {".webm": "video/webm", ".mp4": "video/mp4"}
MAX_BODY = 16 * 1024  # bytes; a generation request is a few hundred
_JOB = re.compile(r"/api/jobs/([0-9a-f]{12})")
_FILE = re.compile(r"/files/([0-9a-f]{12}\.(?:webm|mp4))")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class StudioHandler(BaseHTTPRequestHandler):
    """One HTTP request against `self.server.studio` (a `Studio`)."""

    server: StudioServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        path = self.path.split("?", 1)[0]
        if path in STATIC_FILES:
            name, kind = STATIC_FILES[path]
            return self._send(200, (STATIC / name).read_bytes(), kind)
        if path == "/api/model":
            return self._json(200, self.server.studio.model_info())
        if path == "/api/jobs":
            return self._json(200, {"jobs": self.server.studio.jobs()})
        if match := _JOB.fullmatch(path):
            return self._job(self.server.studio.job(match[1]))
        if match := _FILE.fullmatch(path):
            return self._file(self.server.studio.file(match[1]))
        self._error(404, f"nothing at {path[:80]!r}")

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path != "/api/jobs":
            return self._error(404, f"nothing to post to at {path[:80]!r} (uploads for animate, "
                                    f"extend, loop, connect and edit are not served yet)")
        body = self._read_json()
        if body is None:
            return
        try:
            self._json(202, self.server.studio.submit(body))
        except UserError as e:
            self._error(400, str(e).splitlines()[0])

    def do_DELETE(self) -> None:  # noqa: N802
        match = _JOB.fullmatch(self.path.split("?", 1)[0])
        self._job(self.server.studio.cancel(match[1]) if match else None)

    # -- helpers -------------------------------------------------------------------------------

    def _read_json(self) -> object | None:
        """The request body as JSON, or None after answering with the reason it is refused."""
        kind = self.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True  # the unread body must not be taken for a request
        if length < 0:
            return self._error(411, "send the request with a Content-Length")
        if length > MAX_BODY:
            return self._error(413, f"the request is {length} bytes; at most {MAX_BODY} (uploads "
                                    f"are not served yet)")
        raw = self.rfile.read(length)
        if kind != "application/json":
            return self._error(415, f"send JSON (Content-Type application/json), not {kind!r}")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._error(400, "the request is not valid JSON")

    def _job(self, job: dict | None) -> None:
        if job is None:
            return self._error(404, "no such job (jobs last until the server stops)")
        self._json(200, job)

    def _file(self, path: Path | None) -> None:
        """Send a clip the studio wrote, whole or the one byte range asked for."""
        if path is None or not path.is_file():
            return self._error(404, "no such file")
        data = path.read_bytes()
        match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        if not match or not (match[1] or match[2]):
            return self._send(200, data, FILE_TYPES[path.suffix], {"Accept-Ranges": "bytes"})
        start, end = _byte_range(match[1], match[2], len(data))
        if start > end:
            return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
        self._send(206, data[start:end + 1], FILE_TYPES[path.suffix],
                   {"Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{end}/{len(data)}"})

    def _json(self, status: int, value: object) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _send(self, status: int, data: bytes, kind: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        """Quiet: polling would print a line every few hundred milliseconds."""


class StudioServer(ThreadingHTTPServer):
    """A threading HTTP server that holds its `Studio`."""

    daemon_threads = True

    def __init__(self, studio: Studio, host: str = "127.0.0.1", port: int = 7860) -> None:
        self.studio = studio
        super().__init__((host, port), StudioHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def _byte_range(first: str, last: str, size: int) -> tuple[int, int]:
    """An HTTP byte range ('500-', '-500', '0-99') -> inclusive (start, end) within size."""
    if not first:  # the last `last` bytes
        return max(size - int(last), 0), size - 1
    return int(first), min(int(last) if last else size - 1, size - 1)
