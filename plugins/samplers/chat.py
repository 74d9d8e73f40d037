"""``lmforge chat <model_dir>``: talk to a model in the terminal, tokens printed as they are generated.

A conversation is a list of messages rendered with the model's chat template; every turn the whole list
(system prompt first) is the prompt, so earlier turns are the model's memory. Context files
(``--context notes.md``) are put into the system message as working memory. When the conversation no
longer fits the model's context window, the oldest turns are dropped (the system message stays).

Answers stream through :class:`~lmforge.plugins.lib.generation.TextStream` (transformers'
``TextIteratorStreamer``), so the tokens shown are exactly what ``generate`` produced; the same sampling
settings as the batch sampler apply (temperature, top-k/p, min-p, repetition penalty, end-of-turn token,
stop strings).

Commands inside the chat: ``/retry`` (new answer to the last message), ``/clear`` (forget the
conversation), ``/system TEXT``, ``/context FILE``, ``/help``, ``/quit`` (or Ctrl-D). Ctrl-C stops an answer.

``--retrieve DOCS`` (or ``--retrieve-url URL``) looks the answer up when the model is unsure
(plugins/retrieval/when_unsure.py): before each answer a line says whether retrieval fired, the uncertainty
against the threshold, and the passages that went into the context.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from lmforge.errors import MissingArtifact
from lmforge.plugins.lib.generation import TextStream, check_generation_settings, encode_prompt, render_prompt
from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer, model_path
from lmforge.plugins.retrieval.when_unsure import (
    add_context_when_unsure,
    add_retrieval_arguments,
    build_retriever,
    retrieval_from_args,
)
from transformers import set_seed

HELP = """commands: /retry  new answer to your last message     /clear  forget the conversation
          /system TEXT  set the system prompt             /context FILE  add a file as working memory
          /help  this text                                /quit  leave (or Ctrl-D); Ctrl-C stops an answer"""


@dataclass
class ChatSettings:
    """Generation settings of ``lmforge chat`` (the sampler's keys; ``--temperature`` etc. on the command line)."""

    max_new_tokens: int = 256  # per answer; Ctrl-C stops one sooner
    do_sample: bool = True  # false: greedy, the same answer every time
    temperature: float = 0.7  # a little sharper than the model's own distribution: fewer odd words in chat
    top_k: int = 50
    top_p: float = 0.95
    min_p: float | None = None
    repetition_penalty: float = 1.0
    n: int = 1
    seed: int | None = None
    stop_strings: list[str] = field(default_factory=list)
    stop_tokens: list[str] = field(default_factory=lambda: ["<|end|>"])


class ChatSession:
    """A multi-turn conversation with one model: ``send`` / ``retry`` stream the answer, ``clear`` forgets."""

    def __init__(self, model_dir, system_prompt: str | None = None, context_files=(), device: str = "auto",
                 retrieval=None, **settings):
        model_dir = model_path(model_dir)  # a model dir or a Hub id (org/name[@revision]) from the HF cache
        if not (model_dir / "config.json").is_file():
            raise MissingArtifact(f"chat: model dir not found (no config.json): {model_dir}")
        self.settings = replace(ChatSettings(), **settings)
        check_generation_settings(self.settings, where="chat")
        self.system_prompt = system_prompt
        self.context: list[tuple[str, str]] = []
        for path in context_files:
            self.add_context(path)
        self.messages: list[dict[str, str]] = []
        # Look it up when unsure (a RetrievalConfig): the record of the last answer is in ``last_retrieval``.
        self.retrieval, self.retriever, self.last_retrieval = retrieval, None, None
        if retrieval is not None:
            self.retriever = build_retriever(retrieval)
        self._load(model_dir, device)

    def _load(self, model_dir: Path, device: str) -> None:
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_causal_lm(model_dir).eval()
        if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
            self.model = self.model.to("cuda")
        self.context_window = getattr(self.model.config, "max_position_embeddings", None) or 2048

    def add_context(self, path) -> None:
        path = Path(path)
        if not path.is_file():
            raise MissingArtifact(f"chat: context file not found: {path}")
        self.context.append((path.name, path.read_text(encoding="utf-8", errors="replace").strip()))

    def system_message(self) -> str | None:
        parts = [self.system_prompt] if self.system_prompt else []
        if self.context:
            parts.append("Use the following context when it helps.")
            parts += [f"### {name}\n{text}" for name, text in self.context]
        return "\n\n".join(parts) or None

    def conversation(self) -> list[dict[str, str]]:
        system = self.system_message()
        return ([{"role": "system", "content": system}] if system else []) + self.messages

    def rendered_prompt(self) -> str:
        return render_prompt(self.tokenizer, self.conversation())

    def _fit_context_window(self) -> list[int]:
        budget = self.context_window - self.settings.max_new_tokens
        ids = encode_prompt(self.tokenizer, self.conversation())
        while len(ids) > budget and len(self.messages) > 1:
            self.messages = self.messages[2:] if len(self.messages) > 2 else self.messages[-1:]
            ids = encode_prompt(self.tokenizer, self.conversation())
        return ids

    def send(self, text: str) -> Iterator[str]:
        """Add a user message and stream the answer; the answer joins the conversation when complete."""
        self.messages.append({"role": "user", "content": text})
        if self.retrieval is not None:
            self._look_up_when_unsure()
        return self._answer()

    def _look_up_when_unsure(self) -> None:
        """Measure the uncertainty of the coming answer; when it is high, put passages in the user turn."""
        conversation = self.conversation()
        (augmented,), (record,) = add_context_when_unsure(
            self.model, self.tokenizer, [conversation], self.retrieval, self.retriever, None,
            self.settings.stop_tokens)
        self.last_retrieval = asdict(record)
        if record.fired:  # the passages stay in the conversation: they are its working memory now
            self.messages[-1] = augmented[-1]

    def retry(self) -> Iterator[str]:
        """Drop the last answer and stream a new one to the same user message."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            self.messages.pop()
        if not self.messages:
            return iter(())
        return self._answer()

    def clear(self) -> None:
        self.messages = []

    def _answer(self) -> Iterator[str]:
        if self.settings.seed is not None:
            set_seed(self.settings.seed)
        answer = TextStream(self.model, self.tokenizer, self._fit_context_window(), self.settings)
        try:
            yield from answer
        finally:
            if answer.text or not answer.failed:
                self.messages.append({"role": "assistant", "content": answer.text})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge chat", description="Chat with a model dir in the terminal.")
    parser.add_argument("model_dir", help="a model directory or a Hub id (org/name[@revision]) in the HF cache")
    parser.add_argument("--system", default=None, help="system prompt (the model's identity)")
    parser.add_argument("--context", action="append", default=[], metavar="FILE",
                        help="a file put into the prompt as working memory (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--min-p", type=float, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding (deterministic)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_retrieval_arguments(parser)
    return parser


def show_retrieval(record: dict | None, write) -> None:
    """One line on whether the answer was looked up, then the passages used (shortened)."""
    if not record:
        return
    comparison = ">" if record["fired"] else "<="
    verdict = "looked it up" if record["fired"] else "answering from memory"
    write(f"({verdict}: {record['signal']} {record['uncertainty']:.2f} {comparison} {record['threshold']:.2f}"
          + (f"; {len(record['passages'])} passages)\n" if record["fired"] else ")\n"))
    for number, passage in enumerate(record["passages"], 1):
        text = passage["text"].replace("\n", " ")
        write(f"  [{number}] {text[:100]}{'…' if len(text) > 100 else ''}  ({passage['source']})\n")


def chat_main(argv: list[str], input_fn=input, output=None) -> int:
    """The ``lmforge chat`` command; ``input_fn``/``output`` are replaceable to drive it from code."""
    output = output or sys.stdout
    args = _parser().parse_args(argv)
    session = ChatSession(args.model_dir, system_prompt=args.system, context_files=args.context,
                          device=args.device, retrieval=retrieval_from_args(args),
                          max_new_tokens=args.max_new_tokens, do_sample=not args.greedy,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                          repetition_penalty=args.repetition_penalty, seed=args.seed, stop_strings=args.stop)
    write = output.write
    write(f"chatting with {args.model_dir}  (/help for commands)\n")

    def stream(pieces):
        show_retrieval(session.last_retrieval, write)  # decided in send(), before the answer streams
        write("assistant> ")
        try:
            for piece in pieces:
                write(piece)
                output.flush()
        except KeyboardInterrupt:
            write(" [stopped]")
        write("\n")

    while True:
        try:
            line = input_fn("you> ")
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return 0
        command, _, argument = line.strip().partition(" ")
        if command in ("/quit", "/exit"):
            return 0
        elif command == "/help":
            write(HELP + "\n")
        elif command == "/clear":
            session.clear()
            write("(cleared)\n")
        elif command == "/retry":
            stream(session.retry())
        elif command == "/system":
            session.system_prompt = argument or None
            write("(system prompt set)\n" if argument else "(system prompt removed)\n")
        elif command == "/context" and not argument:
            write("(usage: /context FILE)\n")
        elif command == "/context":
            try:
                session.add_context(argument)
                write(f"(added {argument} to the context)\n")
            except MissingArtifact as exc:
                write(f"({exc})\n")
        elif command.startswith("/"):
            write(f"(unknown command {command}; /help lists them)\n")
        elif line.strip():
            stream(session.send(line))
