"""The FastAPI app: the model behind it, its routes, and the answers (whole or streamed as server-sent events).

Every handler is a thin wrapper over a module-level function taking the :class:`ModelServer`; generation
happens on the worker thread (:mod:`lmforge.plugins.serve.worker`), whose events reach a request through
an asyncio queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from dataclasses import asdict, dataclass

import torch
from fastapi import FastAPI, Request  # Request at module level: FastAPI resolves handlers' annotations here
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from lmforge.errors import MissingArtifact
from lmforge.plugins.lib.generation import encode_prompt, eos_token_ids, with_system_prompt
from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer, resolve_model_ref
from lmforge.plugins.retrieval.when_unsure import add_context_when_unsure, build_retriever
from lmforge.plugins.serve.middleware import LOCAL_HOSTS, MAX_BODY_BYTES, APIKeyCheck, BodyLimit, HostCheck
from lmforge.plugins.serve.schema import (
    APIError,
    ChatRequest,
    ClientGone,
    CompletionRequest,
    _Request,
    _unsupported,
    error_response,
)
from lmforge.plugins.serve.worker import Delta, Done, Event, Failed, GenerationWorker, Job, Sampling
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException


class ModelServer:
    """The model, its tokenizer and the generation worker behind the HTTP app."""

    def __init__(self, model_dir, model_name: str | None = None, device: str = "auto", max_batch_size: int = 16,
                 batch_wait_s: float = 0.005, stop_tokens=("<|end|>",), retrieval=None):
        resolved = resolve_model_ref(model_dir)  # a model dir or a Hub id (org/name[@revision]) from the HF cache
        model_dir = resolved.path
        if not (model_dir / "config.json").is_file():
            raise MissingArtifact(f"serve: model dir not found (no config.json): {model_dir}")
        self.model_name = model_name or resolved.repo_id or model_dir.name
        self.created = int(time.time())
        self.tokenizer = load_tokenizer(model_dir)
        model = load_causal_lm(model_dir).eval()
        if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
            model = model.to("cuda")
        self.context_window = getattr(model.config, "max_position_embeddings", None) or 2048
        self.worker = GenerationWorker(model, self.tokenizer, eos_token_ids(self.tokenizer, stop_tokens),
                                       max_batch_size=max_batch_size, batch_wait_s=batch_wait_s)
        # Look it up when unsure (chat requests): a RetrievalConfig, its retriever, and the stop tokens it probes with
        self.retrieval, self.retriever, self.stop_tokens = retrieval, None, tuple(stop_tokens)
        if retrieval is not None:
            self.retriever = build_retriever(retrieval)

    def look_up_when_unsure(self, messages: list[dict]) -> tuple[list[dict], dict]:
        """The messages with passages added when the model is unsure, and the record (the response's
        ``lmforge_retrieval`` field). Runs in a worker thread: it generates a few probe tokens."""
        (augmented,), (record,) = add_context_when_unsure(self.worker.model, self.tokenizer, [messages],
                                                          self.retrieval, self.retriever, None, self.stop_tokens)
        return augmented, asdict(record)

    def close(self) -> None:
        self.worker.close()


def create_app(server: ModelServer, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS):
    """The FastAPI app serving ``server``'s model.

    ``allowed_hosts``: Host header names answered (None: any); the default refuses other names, so a web
    page on another site cannot reach a server on 127.0.0.1 through DNS rebinding.
    """
    app = FastAPI(title="lmforge", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    _install_error_handlers(app)
    _add_routes(app)
    # Outermost first when a request arrives: Host, then body size, then the key.
    if api_key:
        app.add_middleware(APIKeyCheck, api_key=api_key,
                           refusal=error_response(401, "missing or wrong API key (Authorization: Bearer <key>)",
                                                  code="invalid_api_key", kind="authentication_error"))
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    return app


def _install_error_handlers(app) -> None:
    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error_response(400, f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}",
                                  code="invalid_json")
        location = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(location) or None
        return error_response(400, f"{param or 'body'}: {first['msg']}", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error_response(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)

    @app.exception_handler(Exception)
    async def unexpected_error(request, exc):
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error")


def _add_routes(app) -> None:
    """The endpoints; each is a thin wrapper over a module-level function taking the ModelServer."""

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(http_request: Request):
        return {"object": "list", "data": [model_card(http_request.app.state.server)]}

    @app.get("/v1/models/{name}")
    async def one_model(name: str, http_request: Request):
        server = http_request.app.state.server
        if name != server.model_name:
            raise APIError(404, f"model '{name}' does not exist; this server serves '{server.model_name}'",
                           param="model", code="model_not_found")
        return model_card(server)

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, http_request: Request):
        return await answer_completions(http_request.app.state.server, request, http_request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest, http_request: Request):
        return await answer_chat(http_request.app.state.server, request, http_request)


def model_card(server: ModelServer) -> dict:
    return {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "lmforge"}


async def tokenize(function, *args) -> list[int]:
    """Tokenise in a worker thread, so a long prompt never blocks the event loop (and /health)."""
    try:
        return await run_in_threadpool(function, *args)
    except UnicodeEncodeError:
        raise APIError(400, "the prompt is not valid Unicode text (a lone surrogate)", param="prompt") from None


def make_job(server: ModelServer, request: _Request, prompt_ids: list[int], max_tokens: int | None, emit) -> Job:
    _unsupported(request)
    if request.model not in (None, server.model_name):
        raise APIError(404, f"model '{request.model}' does not exist; this server serves "
                            f"'{server.model_name}'", param="model", code="model_not_found")
    if not prompt_ids:
        raise APIError(400, "the prompt is empty", param="prompt")
    room = server.context_window - len(prompt_ids)
    if max_tokens is None:
        max_tokens = room
    if room < 1 or max_tokens > room:
        raise APIError(400, f"the prompt has {len(prompt_ids)} tokens and asks for {max_tokens} more; the "
                            f"model's context window is {server.context_window} tokens",
                       param="max_tokens", code="context_length_exceeded")
    do_sample = request.temperature > 0
    sampling = (Sampling(True, request.temperature, request.top_k, request.top_p, request.min_p or None,
                         request.repetition_penalty) if do_sample
                else Sampling(False, 0, 0, 1, None, request.repetition_penalty))
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    return Job(prompt_ids=prompt_ids, max_new_tokens=max_tokens, sampling=sampling, stop=tuple(stops),
               n=request.n, stream=request.stream, seed=request.seed if do_sample else None, emit=emit)


def channel():
    """An asyncio queue for one request's events and a thread-safe ``emit`` the worker calls."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    return events, (lambda event: loop.call_soon_threadsafe(events.put_nowait, event))


async def next_event(events: asyncio.Queue, http_request: Request) -> Event:
    """The next worker event, or ClientGone when the client disconnected (nothing cancels the handler)."""
    while True:
        if await http_request.is_disconnected():
            raise ClientGone(499, "the client disconnected")
        try:
            return await asyncio.wait_for(events.get(), timeout=0.25)
        except asyncio.TimeoutError:
            continue


async def collect(jobs: list[Job], events: asyncio.Queue, http_request: Request) -> dict[int, Done]:
    """Wait for every choice of every job: ``{choice: Done}``."""
    results, expected = {}, sum(job.n for job in jobs)
    try:
        while len(results) < expected:
            event = await next_event(events, http_request)
            if isinstance(event, Failed):
                raise APIError(500, event.message, kind="server_error")
            if isinstance(event, Done):
                results[event.choice] = event
    finally:
        for job in jobs:
            job.cancelled.set()  # the client went away (or an error): drop rows still waiting or running
    return results


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def stream_events(jobs: list[Job], events, http_request, make_chunk, prompt_tokens, include_usage,
                        first_chunks=()):
    """SSE body: deltas as they come, a final chunk per choice, optional usage, then [DONE]."""
    try:
        for chunk in first_chunks:
            yield sse(chunk)
        finished, expected, generated = 0, sum(job.n for job in jobs), 0
        while finished < expected:
            event = await next_event(events, http_request)
            if isinstance(event, Failed):
                yield sse({"error": {"message": event.message, "type": "server_error", "param": None,
                                     "code": None}})
                return
            if isinstance(event, Delta):
                yield sse(make_chunk(event.choice, text=event.text))
            elif isinstance(event, Done):
                finished += 1
                generated += event.tokens
                yield sse(make_chunk(event.choice, finish_reason=event.reason))
        if include_usage:
            yield sse(make_chunk(None, usage=usage(prompt_tokens, generated)))
        yield "data: [DONE]\n\n"
    except ClientGone:
        return
    finally:
        for job in jobs:
            job.cancelled.set()  # a client that went away stops its rows; a finished job is unaffected


@dataclass
class Chunks:
    """Builds the streamed chunks of one response (``text_completion`` or ``chat.completion.chunk``)."""

    response_id: str
    created: int
    model: str
    chat: bool

    def __call__(self, index, text=None, finish_reason=None, usage=None, role=None) -> dict:
        if self.chat:
            delta = {**({"role": role} if role else {}), **({"content": text} if text is not None else {})}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        body = {"id": self.response_id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [] if index is None else [choice]}
        if usage:
            body["usage"] = usage
        return body


async def answer_completions(server: ModelServer, request: CompletionRequest, http_request: Request):
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    if not prompts:
        raise APIError(400, "prompt: at least one prompt is needed", param="prompt")
    events, emit = channel()
    jobs = []
    for number, prompt in enumerate(prompts):
        ids = (await tokenize(server.tokenizer, prompt))["input_ids"]
        jobs.append(make_job(server, request, ids, request.max_tokens,
                             lambda event, base=number * request.n: emit(_shift(event, base))))
    prompt_tokens = sum(len(job.prompt_ids) * job.n for job in jobs)
    chunks = Chunks(f"cmpl-{uuid.uuid4().hex}", int(time.time()), server.model_name, chat=False)
    for job in jobs:
        server.worker.submit(job)
    if request.stream:
        include_usage = bool((request.stream_options or {}).get("include_usage"))
        return StreamingResponse(stream_events(jobs, events, http_request, chunks, prompt_tokens, include_usage),
                                 media_type="text/event-stream")
    results = await collect(jobs, events, http_request)
    choices = [{"index": index, "text": results[index].text, "logprobs": None,
                "finish_reason": results[index].reason} for index in sorted(results)]
    return {"id": chunks.response_id, "object": "text_completion", "created": chunks.created,
            "model": server.model_name, "choices": choices,
            "usage": usage(prompt_tokens, sum(r.tokens for r in results.values()))}


async def answer_chat(server: ModelServer, request: ChatRequest, http_request: Request):
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in request.messages]
    extension = {}  # lmforge_retrieval: whether the answer was looked up, why, and with which passages
    if server.retrieval is not None:
        messages, extension["lmforge_retrieval"] = await run_in_threadpool(server.look_up_when_unsure, messages)
    ids = await tokenize(encode_prompt, server.tokenizer, with_system_prompt(messages, None))
    events, emit = channel()
    job = make_job(server, request, ids, request.max_completion_tokens or request.max_tokens, emit)
    chunks = Chunks(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), server.model_name, chat=True)
    server.worker.submit(job)
    if request.stream:
        first = [{**chunks(index, text="", role="assistant"), **extension} for index in range(job.n)]
        include_usage = bool((request.stream_options or {}).get("include_usage"))
        return StreamingResponse(stream_events([job], events, http_request, chunks, len(ids) * job.n,
                                               include_usage, first), media_type="text/event-stream")
    results = await collect([job], events, http_request)
    choices = [{"index": index, "message": {"role": "assistant", "content": results[index].text},
                "logprobs": None, "finish_reason": results[index].reason} for index in sorted(results)]
    return {"id": chunks.response_id, "object": "chat.completion", "created": chunks.created,
            "model": server.model_name, "choices": choices,
            "usage": usage(len(ids) * job.n, sum(r.tokens for r in results.values())), **extension}


def _shift(event: Event, base: int) -> Event:
    """Number choices across the prompts of one /v1/completions request (prompt k's choices follow k-1's)."""
    if isinstance(event, (Delta, Done)):
        return dataclasses.replace(event, choice=event.choice + base)
    return event
