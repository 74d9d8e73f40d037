"""The ranking page on 127.0.0.1: the standard library's ``ThreadingHTTPServer`` with a few JSON endpoints.

A framework would not make a handful of endpoints for one local user shorter or safer, and it would add a
dependency. It binds 127.0.0.1 unless told otherwise, answers only requests whose Host header is the address it
serves (DNS rebinding) and only JSON POSTs (a cross-site form cannot send one without a CORS preflight, never
granted).
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from lmforge.errors import ConfigError, DataError
from lmforge.plugins.lib.local_page import LocalPageHandler, LocalPageServer
from lmforge.plugins.rank.agreement import EXPORT_MODES, agreement, export_preferences
from lmforge.plugins.rank.session import RankSession

PAGE = Path(__file__).with_name("rank.html")


class RankHandler(LocalPageHandler):
    server: RankServer

    @property
    def quiet(self) -> bool:
        return not self.server.verbose

    def do_GET(self):
        if self.refuse_foreign_host():
            return None
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path in ("/", "/index.html"):
            return self.send_body(200, PAGE.read_bytes(), "text/html; charset=utf-8")
        if url.path == "/api/state":
            annotator = (query.get("annotator") or [self.server.default_annotator])[0]
            return self.send_json({**self.server.session.state(annotator),
                               "default_annotator": self.server.default_annotator})
        if url.path == "/api/agreement":
            return self.send_json(agreement(self.server.session))
        return self.send_json({"error": f"no such path {url.path}"}, HTTPStatus.NOT_FOUND)

    def handle_post(self, path: str, body: dict):
        if path == "/api/judge":
            if not isinstance(body.get("annotator"), str):
                raise DataError("annotator: expected a name (a string)")
            event = self.server.session.record(body.get("annotator"), body.get("prompt_id"),
                                               body.get("ranking"), body.get("skipped") is True)
            return self.send_json({"ok": True, "event": event})
        if path == "/api/export":
            mode = body.get("mode") or "all_pairs"
            if mode not in EXPORT_MODES:  # also keeps the file name inside the session directory
                raise ConfigError(f"mode: {mode!r} is not one of {', '.join(EXPORT_MODES)}")
            out = self.server.session.directory / f"preferences.{mode}.jsonl"
            result = export_preferences(self.server.session, out, mode)
            return self.send_json({"ok": True, **result, "agreement": agreement(self.server.session)})
        return self.send_json({"error": f"no such path {path}"}, HTTPStatus.NOT_FOUND)


class RankServer(LocalPageServer):
    def __init__(self, session: RankSession, host: str = "127.0.0.1", port: int = 0,
                 default_annotator: str = "", verbose: bool = False):
        super().__init__(host, port, RankHandler)
        self.session = session
        self.default_annotator = default_annotator
        self.verbose = verbose


def start_server(session: RankSession, host: str = "127.0.0.1", port: int = 0, annotator: str = "") -> RankServer:
    """Serve the ranking page in a background thread (port 0: any free port); ``.shutdown()`` stops it."""
    return RankServer(session, host, port, annotator).serve_in_background("lmforge-rank")
