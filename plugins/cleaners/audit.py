"""``lmforge audit runs/<name>/cleaner``: a person reviews what the cleaner removed and marks wrong removals.

Why: filters make mistakes a rule cannot see (sex-education text caught by the explicit-content list, a
short poem dropped as "too few words"), and the project's source documents say much of the data is checked
by hand. The standard cleaner writes every removed document to ``removed.jsonl`` with the step and reason;
this command serves a local page (127.0.0.1, no network, no dependency: the standard library's HTTP server,
like ``lmforge rank``) listing them by reason, with the text. Marking one as wrong adds its id to an
allow-list file beside the run, ``runs/<name>/cleaner.allow.json`` (written atomically on every mark). The
next run given ``cleaner.allow_list=runs/<name>/cleaner.allow.json`` keeps those documents (they still go
through the later steps), its fingerprint changes with the list's contents, and its report counts them
(``kept_by_allow_list``, ``allow_list_overruled``).

The server answers only requests whose Host header is the address it serves (DNS rebinding) and only JSON
POSTs (a cross-site form cannot send one without a CORS preflight, never granted).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections import Counter
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lmforge.errors import DataError
from lmforge.plugins.lib.local_page import LocalPageHandler, LocalPageServer

PAGE = Path(__file__).with_name("audit.html")


class AuditSession:
    """The removed documents of one cleaner artifact and the allow-list the marks go to."""

    def __init__(self, cleaner_dir: str | Path, allow_file: str | Path | None = None):
        self.directory = Path(cleaner_dir)
        removed = self.directory / "removed.jsonl"
        if not removed.is_file():
            raise DataError(f"{removed}: not found; `lmforge audit` needs a standard cleaner's output "
                            "(cleaner=standard, audit_docs > 0)")
        self.removed = [json.loads(line) for line in removed.read_text(encoding="utf-8").splitlines() if line.strip()]
        self.allow_file = Path(allow_file) if allow_file else self.directory.parent / f"{self.directory.name}.allow.json"
        self.lock = threading.Lock()
        self.allowed: set[str] = set()
        if self.allow_file.is_file():
            self.allowed = set(json.loads(self.allow_file.read_text()).get("ids", []))

    def state(self) -> dict[str, Any]:
        reasons = Counter(f"{d['step']}:{d['reason']}" for d in self.removed)
        return {"cleaner": str(self.directory), "allow_file": str(self.allow_file), "command": self.command(),
                "reasons": dict(reasons.most_common()), "allowed": sorted(self.allowed),
                "documents": [{**d, "wrong": d["id"] in self.allowed} for d in self.removed]}

    def command(self) -> str:
        return f"lmforge run cleaner.allow_list={self.allow_file}"

    def mark(self, doc_id: str, wrong: bool) -> dict[str, Any]:
        if not any(d["id"] == doc_id for d in self.removed):
            raise DataError(f"no removed document with id {doc_id!r}")
        with self.lock:
            (self.allowed.add if wrong else self.allowed.discard)(doc_id)
            temp = self.allow_file.with_name(self.allow_file.name + f".tmp{os.getpid()}")
            temp.write_text(json.dumps({"cleaner": str(self.directory), "ids": sorted(self.allowed)}, indent=1))
            os.replace(temp, self.allow_file)
        return {"ok": True, "allowed": len(self.allowed), "command": self.command()}


class AuditHandler(LocalPageHandler):
    server: AuditServer

    def do_GET(self):
        if self.refuse_foreign_host():
            return None
        path = urlparse(self.path).path
        if path in ("/", "/index.html"):
            return self.send_body(200, PAGE.read_bytes(), "text/html; charset=utf-8")
        if path == "/api/state":
            return self.send_json(self.server.session.state())
        return self.send_json({"error": f"no such path {path}"}, HTTPStatus.NOT_FOUND)

    def handle_post(self, path: str, body: dict):
        if path != "/api/mark":
            return super().handle_post(path, body)
        return self.send_json(self.server.session.mark(str(body.get("id")), bool(body.get("wrong"))))


class AuditServer(LocalPageServer):
    def __init__(self, session: AuditSession, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port, AuditHandler)
        self.session = session


def start_server(session: AuditSession, host: str = "127.0.0.1", port: int = 0) -> AuditServer:
    """Serve the audit page in a background thread (port 0: any free port); ``.shutdown()`` stops it."""
    return AuditServer(session, host, port).serve_in_background("lmforge-audit")


def audit_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmforge audit", description=(
        "Review what the cleaner removed in a local web page; mark wrong removals, which the next run keeps."))
    parser.add_argument("cleaner_dir", help="a standard cleaner's output, e.g. runs/default/cleaner")
    parser.add_argument("--allow-file", help="allow-list to write (default: <cleaner_dir>.allow.json beside it)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8766, help="port (default 8766; 0 picks a free one)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    args = parser.parse_args(argv)
    session = AuditSession(args.cleaner_dir, args.allow_file)
    server = AuditServer(session, args.host, args.port)
    print(f"{len(session.removed)} removed documents; audit page at {server.url} (Ctrl-C to stop)")
    print(f"marks go to {session.allow_file}; then run: {session.command()}")
    server.serve_until_interrupted(None if args.no_browser else server.url)
    print(f"{len(session.allowed)} documents on the allow-list {session.allow_file}")
    return 0
