"""A local image server on 127.0.0.1 that misbehaves in every way the web does.

Routes (all GET):

- ``/color/RRGGBB.png``: an 8x8 PNG of that colour.
- ``/status/<code>``: that status with a text body.
- ``/flaky/<name>``: 500 on the first request for ``name``, then a PNG.
- ``/ratelimit/<name>``: 429 with ``Retry-After: 0`` first, then a PNG.
- ``/ratelimit-long``: 429 with ``Retry-After: 3600`` every time.
- ``/slow``: waits a second before answering.
- ``/html``: 200 with ``text/html``.
- ``/huge-declared``, ``/huge-stream``: 50 kB ``image/png`` with and without
  ``Content-Length``.
- ``/corrupt.png``: random bytes served as ``image/png``.
- ``/redirect``: 302 to a green PNG.

``server.counts`` counts requests per path, so tests can prove what was (not) fetched.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tests.precompute.sources import samples

BIG = 50_000


@dataclass
class ImageServer:
    base: str
    counts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def hit(self, path: str) -> int:
        """Count a request; return how many requests ``path`` has had, this one included."""
        with self.lock:
            self.counts[path] += 1
            return self.counts[path]

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()


def _make_handler(server: ImageServer, seen: Counter):
    corrupt = np.random.default_rng(7).bytes(400)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def send_body(self, status: int, body: bytes, content_type: str, length: bool = True, headers=None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if length:
                self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path
            server.hit(path)
            with server.lock:  # first-time state survives server.reset()
                seen[path] += 1
                first_ever = seen[path] == 1
            png = samples.solid_png((255, 0, 0))
            if path.startswith("/color/"):
                rgb = bytes.fromhex(path.removeprefix("/color/").removesuffix(".png"))
                self.send_body(200, samples.solid_png(tuple(rgb)), "image/png")
            elif path.startswith("/status/"):
                self.send_body(int(path.removeprefix("/status/")), b"no", "text/plain")
            elif path.startswith("/flaky/"):
                if first_ever:
                    self.send_body(500, b"try again", "text/plain")
                else:
                    self.send_body(200, png, "image/png")
            elif path.startswith("/ratelimit/"):
                if first_ever:
                    self.send_body(429, b"slow down", "text/plain", headers={"Retry-After": "0"})
                else:
                    self.send_body(200, png, "image/png")
            elif path == "/ratelimit-long":
                self.send_body(429, b"come back tomorrow", "text/plain", headers={"Retry-After": "3600"})
            elif path == "/slow":
                time.sleep(1.0)
                self.send_body(200, png, "image/png")
            elif path == "/html":
                self.send_body(200, b"<html>not an image</html>", "text/html; charset=utf-8")
            elif path == "/huge-declared":
                self.send_body(200, b"\x00" * BIG, "image/png")
            elif path == "/huge-stream":
                self.send_body(200, b"\x00" * BIG, "image/png", length=False)
            elif path == "/corrupt.png":
                self.send_body(200, corrupt, "image/png")
            elif path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/color/00ff00.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_body(404, b"unknown route", "text/plain")

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a sleeping /slow handler must not block shutdown

    def handle_error(self, request, client_address) -> None:
        pass  # clients that time out close their socket; that is expected here


@pytest.fixture(scope="module")
def image_server():
    """Start the misbehaving image server on a free port; stop it when the module ends."""
    holder = ImageServer(base="")
    httpd = _QuietServer(("127.0.0.1", 0), _make_handler(holder, Counter()))
    holder.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield holder
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
