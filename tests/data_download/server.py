"""A small threaded HTTP file server on 127.0.0.1 for download tests.

It serves a directory with ``Range`` support (``206`` + ``Content-Range``), and can misbehave on
purpose: drop the connection after N bytes of a given file (once), ignore ``Range``, or answer
``503`` a few times.  Every request is logged so tests can assert *how* a file was fetched
(e.g. that the second request resumed at the right byte).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


@dataclass
class Request:
    path: str
    range: str | None
    status: int
    sent: int


@dataclass
class ServerControl:
    root: Path
    drop_after: dict[str, int] = field(default_factory=dict)
    """relpath -> bytes to send before cutting the connection (applies once per entry)."""
    fail_503: dict[str, int] = field(default_factory=dict)
    """relpath -> how many times to answer 503 first."""
    ignore_range: bool = False
    log: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""
    in_flight: int = 0
    """Requests whose handler has not finished (and logged) yet."""

    def requests_for(self, relpath: str, settle_s: float = 5.0) -> list[Request]:
        """Logged requests for ``relpath``, once every handler has finished.

        A handler logs after its response is sent, so the client may already be done while the
        server thread is still about to append: wait for in-flight handlers first.
        """
        deadline = time.monotonic() + settle_s
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        with self.lock:
            return [r for r in self.log if r.path == relpath]


def _handler(ctl: ServerControl) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr
            pass

        def _record(self, rel: str, status: int, sent: int) -> None:
            with ctl.lock:
                ctl.log.append(Request(rel, self.headers.get("Range"), status, sent))

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            with ctl.lock:
                ctl.in_flight += 1
            try:
                self._serve()
            finally:
                with ctl.lock:
                    ctl.in_flight -= 1

        def _serve(self) -> None:
            rel = unquote(self.path.split("?", 1)[0]).lstrip("/")
            file = (ctl.root / rel).resolve()
            if ctl.root.resolve() not in file.parents or not file.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._record(rel, 404, 0)
                return
            with ctl.lock:
                fails = ctl.fail_503.get(rel, 0)
                if fails:
                    ctl.fail_503[rel] = fails - 1
            if fails:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._record(rel, 503, 0)
                return
            data = file.read_bytes()
            start, status = 0, 200
            rng = self.headers.get("Range")
            if rng and not ctl.ignore_range and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self._record(rel, 416, 0)
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            with ctl.lock:
                cut = ctl.drop_after.pop(rel, None)
            if cut is not None and cut < len(body):
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self._record(rel, status, cut)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)
            self._record(rel, status, len(body))

    return Handler


class FileServer:
    """Context manager: ``with FileServer(root) as ctl: ctl.base_url``."""

    def __init__(self, root: Path):
        self.control = ServerControl(root=root)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.control))
        self.httpd.daemon_threads = True
        self.control.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ServerControl:
        self.thread.start()
        return self.control

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
