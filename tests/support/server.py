"""A real HTTP server on 127.0.0.1 for replaying captures and injecting faults.

Routes map a path (without query string) to a handler `(request) -> Reply`, or a Reply directly.
Every request is recorded so tests can assert on headers (User-Agent, If-None-Match …) and counts.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"
    etag: str | None = None
    """When set, a request with a matching If-None-Match gets 304 and no body."""
    delay: float = 0.0
    gzip: bool = False


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    at: float


Handler = Callable[[Seen], Reply]


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (timeouts, size caps) are part of the tests, not errors to print."""

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class ReplayServer:
    def __init__(self) -> None:
        self.routes: dict[str, Reply | Handler] = {}
        self.requests: list[Seen] = []
        self.body_bytes_sent = 0
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = Seen(
                    "GET",
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    time.monotonic(),
                )
                server.requests.append(seen)
                route = server.routes.get(parts.path)
                reply = (
                    Reply(404, b"not found", content_type="text/plain")
                    if route is None
                    else (route(seen) if callable(route) else route)
                )
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.etag and seen.headers.get("if-none-match") == reply.etag:
                    self.send_response(304)
                    self.send_header("ETag", reply.etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = gzip.compress(reply.body) if reply.gzip else reply.body
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(body)))
                if reply.gzip:
                    self.send_header("Content-Encoding", "gzip")
                if reply.etag:
                    self.send_header("ETag", reply.etag)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                # Counted before writing: the client may read the whole reply before this thread runs again.
                server.body_bytes_sent += len(body)
                self.wfile.write(body)

        self._httpd = _QuietServer(("127.0.0.1", 0), _H)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> ReplayServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def hits(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]
