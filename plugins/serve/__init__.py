"""``lmforge serve <model_dir>``: an OpenAI-compatible HTTP API for a model dir.

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with
``"stream": true`` as server-sent events, ``data: {...}`` … ``data: [DONE]``), ``GET /health``. Any OpenAI
client works against ``http://127.0.0.1:8000/v1``.

Why FastAPI + uvicorn: request bodies are validated by pydantic models that mirror OpenAI's schema, so a
bad field becomes a 400 naming that field rather than a crash; streaming responses, async handlers and
clean shutdown come with it. Both are well kept and small; the stdlib ``http.server`` would mean
hand-writing threading, chunked SSE, JSON validation and error mapping.

Why a generation worker of our own: ``generate`` runs one batch at a time and is not thread-safe, so every
request goes onto a queue that one worker thread drains. Requests waiting together with the same sampling
settings are decoded as one left-padded batch (greedy answers do not depend on the batch they ride in), a
per-row tracker ends each row at its own length / stop string / end-of-turn token and streams its text as
its tokens arrive, so concurrent requests never see each other's output. A seeded sampling request runs in
a batch of its own, so the same seed gives the same answer. A request whose client disconnects is dropped.

Safety: binds 127.0.0.1 unless ``--host`` says otherwise; with ``--api-key`` every request must carry
``Authorization: Bearer <key>``. Errors are JSON in OpenAI's shape ``{"error": {"message", "type", "param",
"code"}}``: 400 malformed JSON / bad parameters / prompt too long, 401 bad key, 404 unknown model or route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hmac
import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Request  # at module level: FastAPI resolves the handlers' string annotations here
from lmforge.errors import MissingArtifact
from pydantic import BaseModel, ConfigDict, Field, model_validator

# --------------------------------------------------------------------------------------- request schema


def _check_text(value: Any, where: str = "body") -> None:
    """Every string of a request must be valid Unicode (JSON lets a lone surrogate through: "\\ud800")."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: not valid Unicode text (a lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_text(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_text(item, f"{where}[{index}]")


class _Request(BaseModel):
    # Unknown fields are ignored, as OpenAI clients send optional extras (user, metadata, store …).
    # Infinity / NaN (which Python's JSON accepts) are refused: every number must be finite.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data):
        _check_text(data)
        return data

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, lt=2**31)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)  # OpenAI's seeds are 64-bit integers
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    # extensions, as other open servers name them
    top_k: int = Field(default=0, ge=0, lt=2**31)
    min_p: float = Field(default=0.0, ge=0, le=1)
    repetition_penalty: float = Field(default=1.0, gt=0, le=100)


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


class ClientGone(APIError):
    """The client closed the connection: its rows are dropped and nobody is answered."""


def _unsupported(request: _Request) -> None:
    """Reject what this server cannot honour instead of silently ignoring it."""
    checks = [("presence_penalty", request.presence_penalty == 0), ("frequency_penalty", request.frequency_penalty == 0),
              ("logit_bias", not request.logit_bias), ("logprobs", request.logprobs in (None, False))]
    if isinstance(request, CompletionRequest):
        checks += [("echo", not request.echo), ("suffix", request.suffix is None),
                   ("best_of", request.best_of in (None, request.n))]
    if isinstance(request, ChatRequest):
        checks += [("tools", not request.tools),
                   ("response_format", request.response_format in (None, {"type": "text"}))]
    for name, ok in checks:
        if not ok:
            raise APIError(400, f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
    stops = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise APIError(400, "'stop' takes up to 4 non-empty strings", param="stop")


# --------------------------------------------------------------------------------------- generation worker


@dataclass(frozen=True)
class Delta:
    """New text of one choice of a streaming job."""

    choice: int
    text: str


@dataclass(frozen=True)
class Done:
    """One choice finished: its whole text, why it stopped (stop | length) and how many tokens it took."""

    choice: int
    text: str
    reason: str
    tokens: int


@dataclass(frozen=True)
class Failed:
    """The batch this job rode in failed; the job's request answers 500 with ``message``."""

    message: str


Event = Delta | Done | Failed


@dataclass
class Job:
    """One HTTP request's generation: ``n`` rows of the same prompt; events go to ``emit`` (thread-safe)."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: tuple  # (do_sample, temperature, top_k, top_p, min_p, repetition_penalty)
    stop: tuple[str, ...]
    n: int
    stream: bool
    seed: int | None
    emit: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def batch_key(self) -> tuple:
        # Rows share a generate call only when the logits processors are the same; a seeded job runs alone.
        return (self.sampling, id(self) if self.seed is not None else None)


class RowTracker:
    """A ``StoppingCriteria`` that follows every row of a batch: its own limit, stop strings, EOS ids.

    Called by ``generate`` after each new token; streams text deltas for streaming rows, holding back what
    could be the start of a stop string (or half a UTF-8 character) so that no stop text ever leaks.
    """

    def __init__(self, rows: list[tuple[Job, int]], tokenizer, eos_ids: set[int]):
        self.rows, self.tokenizer, self.eos_ids = rows, tokenizer, eos_ids
        self.tokens: list[list[int]] = [[] for _ in rows]
        self.shown = ["" for _ in rows]
        self.done = [False for _ in rows]

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        for row, token in enumerate(input_ids[:, -1].tolist()):
            if self.done[row]:
                continue
            job, _ = self.rows[row]
            if job.cancelled.is_set():
                self.done[row] = True
                continue
            if token in self.eos_ids:
                self.finish(row, "stop")
                continue
            self.tokens[row].append(token)
            if job.stop or job.stream:
                text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
                cut = [text.find(s) for s in job.stop if s in text]
                if cut:
                    self.finish(row, "stop", text[:min(cut)])
                    continue
                if job.stream:
                    self.show(row, text[:self.safe_length(text, job.stop)])
            if len(self.tokens[row]) >= job.max_new_tokens:
                self.finish(row, "length")
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    @staticmethod
    def safe_length(text: str, stops) -> int:
        safe = len(text.rstrip("\ufffd"))
        for stop in stops:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    safe = min(safe, len(text) - size)
                    break
        return safe

    def show(self, row: int, text: str) -> None:
        job, choice = self.rows[row]
        if len(text) > len(self.shown[row]) and text.startswith(self.shown[row]):
            job.emit(Delta(choice, text[len(self.shown[row]):]))
            self.shown[row] = text

    def finish(self, row: int, reason: str, text: str | None = None) -> None:
        job, choice = self.rows[row]
        if text is None:
            text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        self.done[row] = True
        if job.stream:
            self.show(row, text)
        job.emit(Done(choice, text, reason, len(self.tokens[row])))

    def finish_all(self) -> None:
        for row in range(len(self.rows)):
            if not self.done[row] and not self.rows[row][0].cancelled.is_set():
                self.finish(row, "length")


class GenerationWorker:
    """One thread that owns the model: takes jobs off a queue and decodes compatible ones as one batch."""

    def __init__(self, model, tokenizer, eos_ids: list[int], max_batch_size: int = 16,
                 batch_wait_s: float = 0.005):
        self.model, self.tokenizer, self.eos_ids = model, tokenizer, eos_ids
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self.jobs: queue.Queue = queue.Queue()
        self.waiting: list[Job] = []
        self.batch_sizes: list[int] = []  # rows of every generate call, for tests and benchmarks
        self.batch_tokens: list[int] = []  # tokens generated by every generate call
        self.dropped = 0  # jobs whose client went away before they started
        self.thread = threading.Thread(target=self._loop, name="lmforge-generate", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=30)

    def _take(self, block: bool) -> bool:
        try:
            job = self.jobs.get(block=block, timeout=None if block else 0)
        except queue.Empty:
            return True
        if job is None:
            return False
        self.waiting.append(job)
        return True

    def _loop(self) -> None:
        while True:
            if not self._take(block=not self.waiting):
                return
            time.sleep(self.batch_wait_s)  # let requests that arrive together share a batch
            while not self.jobs.empty():
                if not self._take(block=False):
                    return
            live = [job for job in self.waiting if not job.cancelled.is_set()]
            self.dropped += len(self.waiting) - len(live)
            self.waiting = live
            if not self.waiting:
                continue
            key, batch, rows = self.waiting[0].batch_key(), [], 0
            for job in self.waiting:
                if job.batch_key() == key and (not batch or rows + job.n <= self.max_batch_size):
                    batch.append(job)
                    rows += job.n
            self.waiting = [job for job in self.waiting if job not in batch]
            self._generate(batch)

    def _generate(self, batch: list[Job]) -> None:
        import torch
        from lmforge.plugins.lib.generation import left_padded
        from transformers import StoppingCriteriaList, set_seed

        rows = [(job, choice) for job in batch for choice in range(job.n)]
        tracker = RowTracker(rows, self.tokenizer, set(self.eos_ids))
        do_sample, temperature, top_k, top_p, min_p, repetition_penalty = batch[0].sampling
        kwargs = {"do_sample": do_sample, "repetition_penalty": repetition_penalty, "temperature": None, "top_k": None,
                      "top_p": None, "min_p": None}
        if do_sample:
            kwargs.update(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p or None)
        try:
            if batch[0].seed is not None:
                set_seed(batch[0].seed % 2**32)  # numpy takes 32-bit seeds; OpenAI's are 64-bit
            input_ids, attention_mask = left_padded([job.prompt_ids for job, _ in rows], self.pad_id,
                                                    self.model.device)
            with torch.no_grad():
                self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                    max_new_tokens=max(job.max_new_tokens for job in batch),
                                    eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
                                    stopping_criteria=StoppingCriteriaList([tracker]), **kwargs)
            self.batch_sizes.append(len(rows))
            self.batch_tokens.append(sum(len(tokens) for tokens in tracker.tokens))
            tracker.finish_all()
        except Exception as exc:  # noqa: BLE001 - one failed batch answers its own requests with 500; the worker lives on
            for job in batch:
                job.emit(Failed(f"generation failed: {type(exc).__name__}: {exc}"))


# --------------------------------------------------------------------------------------- the app


class ModelServer:
    """The model, its tokenizer and the generation worker behind the HTTP app."""

    def __init__(self, model_dir, model_name: str | None = None, device: str = "auto", max_batch_size: int = 16,
                 batch_wait_s: float = 0.005, stop_tokens=("<|end|>",), retrieval=None):
        import torch
        from lmforge.plugins.lib.generation import eos_token_ids
        from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer, resolve_model_ref

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
            from lmforge.plugins.retrieval.when_unsure import build_retriever

            self.retriever = build_retriever(retrieval)

    def look_up_when_unsure(self, messages: list[dict]) -> tuple[list[dict], dict]:
        """The messages with passages added when the model is unsure, and the record (the response's
        ``lmforge_retrieval`` field). Runs in a worker thread: it generates a few probe tokens."""
        from dataclasses import asdict

        from lmforge.plugins.retrieval.when_unsure import add_context_when_unsure

        (augmented,), (record,) = add_context_when_unsure(self.worker.model, self.tokenizer, [messages],
                                                          self.retrieval, self.retriever, None, self.stop_tokens)
        return augmented, asdict(record)

    def close(self) -> None:
        self.worker.close()


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_BODY_BYTES = 4 << 20  # default request body limit: far above any prompt the context window holds
DRAIN_BYTES = 64 << 20  # a refused body up to this size is read and dropped, so the client gets the 413


def create_app(server: ModelServer, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS):
    """The FastAPI app serving ``server``'s model.

    ``allowed_hosts``: Host header names answered (None: any); the default refuses other names, so a web
    page on another site cannot reach a server on 127.0.0.1 through DNS rebinding.
    """
    from fastapi import FastAPI

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


def error_response(status, message, param=None, code=None, kind="invalid_request_error"):
    """An error in OpenAI's JSON shape (a response object, also usable as an ASGI app)."""
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={
        "error": {"message": message, "type": kind, "param": param, "code": code}})


def _install_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

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
    from starlette.concurrency import run_in_threadpool

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
    sampling = (do_sample, request.temperature, request.top_k, request.top_p, request.min_p,
                request.repetition_penalty) if do_sample else (False, 0, 0, 1, 0, request.repetition_penalty)
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
    from fastapi.responses import StreamingResponse

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
    from fastapi.responses import StreamingResponse
    from lmforge.plugins.lib.generation import encode_prompt, with_system_prompt

    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in request.messages]
    extension = {}  # lmforge_retrieval: whether the answer was looked up, why, and with which passages
    if server.retrieval is not None:
        from starlette.concurrency import run_in_threadpool

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


def _shift(event: Event, base: int) -> Event:
    """Number choices across the prompts of one /v1/completions request (prompt k's choices follow k-1's)."""
    if isinstance(event, (Delta, Done)):
        return dataclasses.replace(event, choice=event.choice + base)
    return event


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
    import uvicorn

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
    from lmforge.plugins.retrieval.when_unsure import add_retrieval_arguments

    add_retrieval_arguments(parser)  # chat requests look the answer up when the model is unsure
    return parser


def serve_main(argv: list[str]) -> int:
    """The ``lmforge serve`` command."""
    import uvicorn

    args = _parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"lmforge serve: warning: binding {args.host} without --api-key; anyone who can reach this "
              "address can use the model", file=sys.stderr)
    from lmforge.plugins.retrieval.when_unsure import retrieval_from_args

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
