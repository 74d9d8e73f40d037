"""Retrievers: given a question, the passages most likely to hold its answer.

Two built-ins, both ``retriever`` plugins (a third party registers its own the same way):

- ``bm25``: a local index over a document collection — the cleaned corpus, a folder of text files or any data
  file the readers take — through ``bm25s`` (a maintained, pure-Python/numpy BM25: indexing ~1 MB/s and
  sub-millisecond queries on this scale with no server, no native build; SQLite FTS5 would need its own
  tokenisation rules for the same ranking, tantivy a compiled wheel). Documents are cut into passages of about
  ``passage_chars`` characters at paragraph or sentence ends, so a passage fits a small model's context.
- ``http``: a web-search (or any search) service the user runs or subscribes to, behind a JSON HTTP interface:
  ``GET <url>?<query_param>=<question>&k=<k>`` (or POST a JSON body) answering ``{"results": [{"text": …,
  "url": …}, …]}``; the field names are configurable. Nothing is contacted unless the user configures a URL.

A retriever is a class with a ``config_class`` and ``search(query, k) -> list[Passage]``.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from lmforge.errors import ConfigError, DataError, LmforgeError
from lmforge.params import at_least, one_of


@dataclass(frozen=True)
class Passage:
    """A piece of a document handed to the model as context."""

    text: str
    source: str  # file:document index, or the URL the search service gave
    score: float


def split_passages(text: str, max_chars: int) -> list[str]:
    """Paragraphs, merged while they fit ``max_chars``; a longer paragraph is cut at sentence ends."""
    pieces: list[str] = []
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not paragraph:
            continue
        sentences = re.split(r"(?<=[.!?])\s+", paragraph) if len(paragraph) > max_chars else [paragraph]
        for sentence in sentences:
            if pieces and len(pieces[-1]) + 1 + len(sentence) <= max_chars:
                pieces[-1] = f"{pieces[-1]} {sentence}"
            else:
                pieces.append(sentence[:max_chars * 2])
    return pieces


@dataclass
class BM25Config:
    collection: Any = "???"  # any data input: a file, folder, glob, dataset dir (runs/<name>/cleaner), Hub id, list
    text_field: str = "text"
    passage_chars: int = 400
    min_score: float = 0.0  # passages scoring at or below this are not returned

    def __post_init__(self):
        at_least(self, 20, "passage_chars")


class BM25Retriever:
    """BM25 over the passages of a local document collection, indexed in memory when first used."""

    config_class = BM25Config

    def __init__(self, config: BM25Config):
        self.config = config
        self._index = None
        self._passages: list[tuple[str, str]] = []

    def _build(self) -> None:
        import bm25s
        from lmforge.plugins.lib.data import BadRecord, iter_rows

        for row in iter_rows(self.config.collection, self.config.text_field):
            if isinstance(row, BadRecord):
                raise row.error()
            for passage in split_passages(row.fields[self.config.text_field], self.config.passage_chars):
                self._passages.append((passage, row.where))
        if not self._passages:
            raise DataError(f"retriever.collection: {self.config.collection} holds no text to index")
        self._index = bm25s.BM25()
        self._index.index(bm25s.tokenize([p for p, _ in self._passages], show_progress=False), show_progress=False)

    def search(self, query: str, k: int) -> list[Passage]:
        import bm25s

        if self._index is None:
            self._build()
        tokens = bm25s.tokenize([query], show_progress=False)
        if not tokens.vocab:  # only stop words: nothing to match
            return []
        k = min(k, len(self._passages))
        ids, scores = self._index.retrieve(tokens, k=k, show_progress=False)
        return [Passage(self._passages[i][0], self._passages[i][1], float(s))
                for i, s in zip(ids[0].tolist(), scores[0].tolist()) if s > self.config.min_score]


@dataclass
class HTTPConfig:
    url: str = "???"  # e.g. http://127.0.0.1:8089/search
    method: str = "GET"  # GET: query in the URL; POST: a JSON body {query_param: question, "k": k}
    query_param: str = "q"
    results_field: str = "results"
    text_field: str = "text"
    source_field: str = "url"
    timeout: float = 10.0

    def __post_init__(self):
        if not str(self.url).startswith(("http://", "https://")):
            raise ConfigError(f"retriever.url: got {self.url!r}, expected an http:// or https:// URL")
        one_of(self, "method", ("GET", "POST"))


class HTTPRetriever:
    """Passages from a search service speaking JSON over HTTP (a web-search API, an intranet index …)."""

    config_class = HTTPConfig

    def __init__(self, config: HTTPConfig):
        self.config = config

    def search(self, query: str, k: int) -> list[Passage]:
        cfg = self.config
        if cfg.method == "GET":
            separator = "&" if "?" in cfg.url else "?"
            request = urllib.request.Request(
                f"{cfg.url}{separator}{urllib.parse.urlencode({cfg.query_param: query, 'k': k})}")
        else:
            request = urllib.request.Request(cfg.url, data=json.dumps({cfg.query_param: query, "k": k}).encode(),
                                             headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=cfg.timeout) as response:
                body = json.loads(response.read().decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise LmforgeError(f"retriever http: {cfg.url}: {exc}") from None
        results = body.get(cfg.results_field) if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise LmforgeError(f"retriever http: {cfg.url} answered without a '{cfg.results_field}' list")
        passages = []
        for rank, item in enumerate(results[:k]):
            if isinstance(item, dict) and isinstance(item.get(cfg.text_field), str):
                passages.append(Passage(item[cfg.text_field], str(item.get(cfg.source_field, cfg.url)),
                                        float(item.get("score", len(results) - rank))))
        return passages
