"""The ``lmforge serve`` command, and ``running_server``: the same server in a background thread of this process."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from dataclasses import dataclass

import uvicorn
from lmforge.plugins.retrieval.when_unsure import add_retrieval_arguments, retrieval_from_args
from lmforge.plugins.serve.app import ModelServer, create_app
from lmforge.plugins.serve.middleware import LOCAL_HOSTS, MAX_BODY_BYTES


@dataclass
class RunningServer:
    url: str  # the OpenAI base URL, http://127.0.0.1:PORT/v1
    model_server: ModelServer


@contextlib.contextmanager
def running_server(model_dir, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                   log_level: str = "warning", max_body_bytes: int = MAX_BODY_BYTES, **server_options):
    """Serve ``model_dir`` from a background thread of this process (port 0: any free port).

    For tests and notebooks: ``with running_server(dir) as s: OpenAI(base_url=s.url, api_key="-")``.
    """
    server = ModelServer(model_dir, **server_options)
    app = create_app(server, api_key, max_body_bytes, allowed_hosts(host))
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    while not uvicorn_server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server could not start on {host}:{port}")
        time.sleep(0.02)
    bound_port = uvicorn_server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(f"http://{host}:{bound_port}/v1", server)
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=30)
        server.close()


def allowed_hosts(host: str, extra=()) -> tuple[str, ...] | None:
    """Host header names to answer: this machine's names plus the bound address; None (any) for a server
    bound to every interface without ``--allow-host`` (its users reach it by names it cannot know)."""
    if host in ("0.0.0.0", "::", "") and not extra:
        return None
    return (*LOCAL_HOSTS, host, *extra)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge serve", description="Serve a model dir over an "
                                     "OpenAI-compatible HTTP API.")
    parser.add_argument("model_dir", help="a model directory or a Hub id (org/name[@revision]) in the HF cache")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every request")
    parser.add_argument("--model-name", default=None, help="the model id clients use (default: the dir's name)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="most rows decoded together")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0,
                        help="how long the worker waits for more requests before starting a batch")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-body-mb", type=float, default=MAX_BODY_BYTES / 2**20,
                        help="largest request body accepted, in MiB (default %(default)s)")
    parser.add_argument("--allow-host", action="append", default=[],
                        help="also answer requests whose Host header is this name (repeatable); a server bound "
                             "to 127.0.0.1 answers only 127.0.0.1, localhost and ::1")
    parser.add_argument("--log-level", default="info")
    add_retrieval_arguments(parser)  # chat requests look the answer up when the model is unsure
    return parser


def serve_main(argv: list[str]) -> int:
    """The ``lmforge serve`` command."""
    args = _parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"lmforge serve: warning: binding {args.host} without --api-key; anyone who can reach this "
              "address can use the model", file=sys.stderr)
    server = ModelServer(args.model_dir, model_name=args.model_name, device=args.device,
                         max_batch_size=args.max_batch_size, batch_wait_s=args.batch_wait_ms / 1000,
                         retrieval=retrieval_from_args(args))
    print(f"lmforge serve: '{server.model_name}' on http://{args.host}:{args.port}/v1", file=sys.stderr)
    try:
        app = create_app(server, args.api_key, int(args.max_body_mb * 2**20), allowed_hosts(args.host, args.allow_host))
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        server.close()
    return 0
