"""The plumbing of lmforge's local web pages (``lmforge rank``, ``lmforge audit``): one request handler base.

Why the standard library's HTTP server and not FastAPI: these pages serve one person on 127.0.0.1, a handful of
requests a minute, and must start instantly with nothing else installed. What every such page needs is here,
written once: security headers on every answer; the Host check (a page answers only its own address, so a
DNS-rebinding site cannot reach it); JSON answers; and a strict request body reader — a Content-Length that
is missing, not a number, negative or too large gets 400/411/413 without reading a byte further (never a hang
or a MemoryError), and a body that is not a JSON object gets 400.
"""

from __future__ import annotations

import json
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BODY_BYTES = 1 << 20  # page requests are a few hundred bytes; anything near this is not one
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
}


class LocalPageHandler(BaseHTTPRequestHandler):
    """Sends with security headers, checks the Host header and reads JSON bodies strictly.

    The server it belongs to has ``allowed_hosts`` (a set of host names); subclasses write ``do_GET`` and
    ``handle_post(path, body)`` (``do_POST`` checks the host, reads the JSON object body, and answers a
    ``LmforgeError`` with 400 and anything else with 500 — never a dropped connection).
    """

    quiet = True  # no access log on the terminal

    def log_message(self, format, *args):
        if not self.quiet:
            super().log_message(format, *args)

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, data: Any, status: int = 200) -> None:
        self.send_body(status, json.dumps(data, ensure_ascii=False).encode("utf-8"),
                       "application/json; charset=utf-8")

    def refuse_foreign_host(self) -> bool:
        """Answer 403 and return True when the Host header is not one this server answers to."""
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if host in self.server.allowed_hosts:
            return False
        self.send_json({"error": "unexpected Host header"}, HTTPStatus.FORBIDDEN)
        return True

    def do_POST(self):
        from lmforge.errors import LmforgeError

        if self.refuse_foreign_host():
            return None
        body = self.read_json_object()
        if body is None:
            return None
        try:
            return self.handle_post(urlparse(self.path).path, body)
        except LmforgeError as exc:
            return self.send_json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except Exception as exc:  # noqa: BLE001 - answer, never drop the connection with a traceback
            return self.send_json({"error": f"internal error: {type(exc).__name__}: {exc}"},
                                  HTTPStatus.INTERNAL_SERVER_ERROR)

    def handle_post(self, path: str, body: dict):
        return self.send_json({"error": f"no such path {path}"}, HTTPStatus.NOT_FOUND)

    def read_json_object(self) -> dict | None:
        """The request's JSON object body, or None after answering 400/411/413/415 (never reads past the body)."""
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            self.send_json({"error": "expected application/json"}, HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            return None
        length = (self.headers.get("Content-Length") or "").strip()
        if not length.isdigit():
            self.close_connection = True  # the body's end is unknown: do not read another request from it
            self.send_json({"error": f"Content-Length must be a non-negative integer, got {length!r}"},
                           HTTPStatus.BAD_REQUEST if length else HTTPStatus.LENGTH_REQUIRED)
            return None
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self.send_json({"error": f"request body of {length} bytes; at most {MAX_BODY_BYTES}"},
                           HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return None
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.send_json({"error": f"invalid JSON body ({exc})"}, HTTPStatus.BAD_REQUEST)
            return None
        if not isinstance(body, dict):
            self.send_json({"error": f"expected a JSON object, got {type(body).__name__}"}, HTTPStatus.BAD_REQUEST)
            return None
        return body


class LocalPageServer(ThreadingHTTPServer):
    """A page's server: answers its own address and the loopback names only; ``url`` is what to open."""

    daemon_threads = True

    def __init__(self, host: str, port: int, handler: type[LocalPageHandler]):
        super().__init__((host, port), handler)
        self.allowed_hosts = {*LOCAL_HOSTS, host}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"

    def serve_until_interrupted(self, open_browser_at: str | None = None) -> None:
        """Serve in this thread until Ctrl-C (the ``lmforge rank`` / ``audit`` commands), opening a browser tab first."""
        if open_browser_at:
            webbrowser.open(open_browser_at)
        try:
            self.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.server_close()

    def serve_in_background(self, name: str):
        """Serve from a daemon thread (tests, notebooks); ``.shutdown()`` stops it. Returns the server."""
        threading.Thread(target=self.serve_forever, name=name, daemon=True).start()
        return self
