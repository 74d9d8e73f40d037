"""The request bodies of the OpenAI-compatible API, checked before any work, and its errors.

Pydantic models mirror OpenAI's fields, so a bad field becomes a 400 naming it; what this server cannot honour
(penalties, logit bias, tools …) is refused by name rather than silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator


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


def error_response(status, message, param=None, code=None, kind="invalid_request_error"):
    """An error in OpenAI's JSON shape (a response object, also usable as an ASGI app)."""
    return JSONResponse(status_code=status, content={
        "error": {"message": message, "type": kind, "param": param, "code": code}})
