"""``lmforge serve <model_dir>``: an OpenAI-compatible HTTP API for a model dir.

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with
``"stream": true`` as server-sent events, ``data: {...}`` … ``data: [DONE]``), ``GET /health``. Any OpenAI
client works against ``http://127.0.0.1:8000/v1``.

Why FastAPI + uvicorn: request bodies are validated by pydantic models that mirror OpenAI's schema, so a
bad field becomes a 400 naming that field rather than a crash; streaming responses, async handlers and
clean shutdown come with it. Both are well kept and small; the stdlib ``http.server`` would mean
hand-writing threading, chunked SSE, JSON validation and error mapping.

Safety: binds 127.0.0.1 unless ``--host`` says otherwise; with ``--api-key`` every request must carry
``Authorization: Bearer <key>``. Errors are JSON in OpenAI's shape ``{"error": {"message", "type", "param",
"code"}}``: 400 malformed JSON / bad parameters / prompt too long, 401 bad key, 404 unknown model or route.

The modules, in the order a request meets them:

- ``schema``: the request bodies (pydantic models of OpenAI's fields) and the errors in OpenAI's shape;
- ``middleware``: Host header, body size and API key checks, before the app reads a body;
- ``app``: the FastAPI app, the model behind it (``ModelServer``) and the answers, whole or streamed;
- ``worker``: the one thread that owns the model and decodes waiting requests as batches;
- ``cli``: the ``lmforge serve`` command and ``running_server`` (a server in a background thread).

This module only registers the command, so that listing commands imports neither torch nor FastAPI.
"""

from lmforge import hookimpl


@hookimpl
def lmforge_cli_commands():
    return {
        "serve": ("serve a model dir over an OpenAI-compatible HTTP API (127.0.0.1 by default)",
                  "lmforge.plugins.serve.cli:serve_main"),
    }
