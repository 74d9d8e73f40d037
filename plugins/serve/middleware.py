"""ASGI middleware in front of the app: the Host header, the body size and the API key, checked before the
app reads a body.

Plain ASGI classes rather than Starlette's ``BaseHTTPMiddleware``, which would wrap ``receive`` and hide
disconnects from the handlers.
"""

from __future__ import annotations

import hmac

from lmforge.plugins.serve.schema import error_response

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_BODY_BYTES = 4 << 20  # default request body limit: far above any prompt the context window holds
DRAIN_BYTES = 64 << 20  # a refused body up to this size is read and dropped, so the client gets the 413


class APIKeyCheck:
    """Plain ASGI middleware (not BaseHTTPMiddleware, which would wrap ``receive`` and hide disconnects)."""

    def __init__(self, app, api_key: str, refusal):
        self.app, self.expected, self.refusal = app, f"Bearer {api_key}".encode(), refusal

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await self.refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_name(header: str) -> str:
    """``127.0.0.1:8000`` -> ``127.0.0.1``; ``[::1]:8000`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """Answers only requests whose Host header names this server (403 otherwise), like the rank page."""

    def __init__(self, app, allowed):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(host) not in self.allowed:
                await error_response(403, f"unexpected Host header {host!r}; this server answers "
                                          f"{', '.join(sorted(self.allowed))}", code="host_not_allowed")(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a request body over ``max_bytes`` (413) or with a malformed Content-Length (400) before the
    app reads it; the body is read here, counted, and handed to the app unchanged."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and not length.strip().isdigit():
            return await error_response(400, f"Content-Length must be a non-negative integer, got "
                                             f"{length.decode('latin-1')!r}")(scope, receive, send)
        if length is not None and int(length) > self.max_bytes:
            return await self._too_large(scope, receive, send, drain=int(length) <= DRAIN_BYTES)
        body, more = b"", scope["method"] in ("POST", "PUT", "PATCH")
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._too_large(scope, receive, send, drain=more)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices, as the app expects

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send, drain: bool):
        """413. A body of sane size is read and dropped first: a client still sending when the connection
        closes sees a reset instead of the answer. A huge declared one is answered at once."""
        drained = 0
        while drain and drained <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            drain = message.get("more_body", False)
        await error_response(413, f"request body over {self.max_bytes} bytes (lmforge serve --max-body-mb)",
                             code="request_too_large")(scope, receive, send)
