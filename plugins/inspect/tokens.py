"""The token view: how a tokenizer cuts text ("headache" -> "head" + "ache"), in colour with ids.

Why: a model never sees characters, only these pieces, and most surprises (a number split digit by digit, a
word that costs five tokens in one language and one in another) are obvious once the cuts are visible. The same
spans feed ``lmforge tokenize`` (coloured in the terminal through rich) and the tokenizer report (plain text with
``|`` between pieces, plus fertility: tokens per word on held-out text).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

# Sentences the tokenizer report shows cut into tokens: everyday words, a compound, numbers, code, a name.
SAMPLE_SENTENCES = ("I have a headache, so I stayed at home today.",
                    "The unbelievably quick fox jumped over 1,234 lazy dogs in 2024.",
                    "def add(a, b): return a + b",
                    "Ada Lovelace wrote the first computer program.")
# Background colours that alternate between neighbouring tokens; readable on dark and light terminals.
TOKEN_COLOURS = ("on dark_blue", "on dark_green", "on dark_magenta", "on dark_cyan", "on grey30", "on dark_red")
WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class TokenSpan:
    """One token: its id, its string in the vocabulary and the piece of the input text it covers."""

    token_id: int
    token: str
    text: str


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def token_spans(tokenizer, text: str) -> list[TokenSpan]:
    """The tokens of ``text`` (no special tokens added), each with the exact slice of text it covers.

    Fast tokenizers give character offsets; byte-level pieces of one multi-byte character share an offset range,
    so a piece that covers no new character shows as an empty string (its id still shows).
    """
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    return spans_from_offsets(text, ids, tokenizer.convert_ids_to_tokens(ids), offsets)


def spans_from_offsets(text: str, ids, tokens, offsets) -> list[TokenSpan]:
    """Spans from ids, token strings and character offsets (a ``tokenizers`` Encoding has all three)."""
    spans, covered = [], 0
    for token_id, token, (start, end) in zip(ids, tokens, offsets):
        start = max(start, covered)
        spans.append(TokenSpan(token_id, token, text[start:end] if end > start else ""))
        covered = max(covered, end)
    return spans


def fertility(tokenizer, texts: list[str]) -> float:
    """Tokens per word (words = runs of letters/digits) over ``texts``: 1.0 means one token per word."""
    words = sum(len(WORD.findall(text)) for text in texts)
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)
    return tokens / max(words, 1)


def plain_view(spans: list[TokenSpan]) -> str:
    """``head|ache`` — the pieces joined by bars, for reports and logs (whitespace shown as ``·``/``⏎``)."""
    return "|".join(span.text.replace(" ", "·").replace("\n", "⏎") or "�" for span in spans)


def rich_view(spans: list[TokenSpan]):
    """A rich ``Text`` with each token on an alternating background colour."""
    from rich.text import Text

    view = Text()
    for index, span in enumerate(spans):
        view.append(span.text.replace("\n", "⏎\n") or "�", style=TOKEN_COLOURS[index % len(TOKEN_COLOURS)])
    return view


def tokenize_main(argv: list[str]) -> int:
    """``lmforge tokenize TOKENIZER TEXT...``: the token view in the terminal."""
    from lmforge.errors import LmforgeError
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(prog="lmforge tokenize",
                                     description="show how a tokenizer cuts text: coloured pieces and their ids")
    parser.add_argument("tokenizer", help="a tokenizer or model dir, or a Hub id in the local cache")
    parser.add_argument("text", nargs="+", help="text to tokenize (several arguments are joined by spaces)")
    parser.add_argument("--ids", action="store_true", help="also print a table of every token with its id")
    args = parser.parse_args(argv)
    try:
        tokenizer = load_any_tokenizer(args.tokenizer)
    except (OSError, ValueError) as exc:
        raise LmforgeError(f"lmforge tokenize: cannot load a tokenizer from {args.tokenizer!r}: "
                           f"{str(exc).splitlines()[0]}") from None
    text = " ".join(args.text)
    spans = token_spans(tokenizer, text)
    console = Console(highlight=False)
    # Colours in a terminal; piped into a file or a log, bars between the pieces say the same.
    console.print(rich_view(spans) if console.is_terminal else plain_view(spans), soft_wrap=True)
    words = len(WORD.findall(text))
    console.print(f"{plural(len(spans), 'token')}, {plural(len(text), 'character')}, {plural(words, 'word')} "
                  f"(fertility {len(spans) / max(words, 1):.2f} tokens/word)")
    if args.ids:
        table = Table("#", "id", "token", "text")
        for index, span in enumerate(spans):
            table.add_row(str(index), str(span.token_id), repr(span.token), repr(span.text))
        console.print(table)
    else:
        console.print("ids: " + " ".join(str(span.token_id) for span in spans))
    return 0


def load_any_tokenizer(ref: str):
    """A tokenizer from a dir or a cached Hub id, no remote code."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ref, trust_remote_code=False)
