"""HTML and WARC inputs for the cleaner: the page's article as text, with its URL and metadata.

Why trafilatura: raw web data is HTML (Common Crawl's WARC files hold it as HTTP responses), and the
article has to be taken out of the page before any text rule can judge it; datatrove and FineWeb use
trafilatura for that step, it is maintained, and it keeps the article while dropping menus, footers,
share bars, comments, scripts and styles. WARC files are read with ``warcio`` (Common Crawl's format,
gzip per record or not). Extraction is the costly part (milliseconds per page), so pages are read
in order in this process and extracted in a bounded process pool, and come back in input order:
the output does not depend on the number of workers, and memory holds at most ``4 x workers`` pages.

``iter_html_documents(path)`` and ``iter_warc_documents(path)`` yield one dict per page::

    {"text": "...article...", "url": "https://...", "title": "...", "date": "2024-05-01", ...}

A page without an article (a login wall, an empty shell filled by JavaScript) yields ``text: ""``,
so the cleaner's report counts it instead of it vanishing. WARC records that are not HTML responses
(requests, metadata, images, PDFs) are skipped: they are not documents.
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from lmforge.sources import suffix_of

HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
WARC_SUFFIXES = {".warc"}
WEB_SUFFIXES = HTML_SUFFIXES | WARC_SUFFIXES

# Fields every web document carries, in this order ("" when unknown, so parquet columns keep one type).
METADATA = ("url", "title", "date", "author", "hostname")
PROBLEM = "__problem__"  # a file that could not be read: the reader turns it into a bad record
WORD = re.compile(r"\w")



def worker_context():
    """The multiprocessing context for the cleaner's worker pools.

    ``fork`` is the cheap one, but forking a process that other threads are running in can copy a lock some
    thread holds and hang the child for ever: under ``accelerate launch`` the main process cleans while
    torch.distributed's (C++) threads run, and tests clean beside in-process servers. Then the workers come from a
    ``forkserver`` (a clean single-threaded process that forks them) instead.
    """
    methods = multiprocessing.get_all_start_methods()
    torch = sys.modules.get("torch")
    distributed = bool(torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized())
    if "fork" in methods and threading.active_count() == 1 and not distributed:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def tidy_text(text: str) -> str:
    """trafilatura's text with the lines that carry no words taken out, and layout tables unwrapped.

    Table cells and list items left empty by the page come out as lines of spaces, lone list markers ("- ")
    or empty cells ("|  |"): nothing to read, yet the document filters count them as lines (Gopher's duplicate
    lines, FineWeb's line punctuation) and their marks as words without letters (Gopher's alpha ratio). A
    table row with one non-empty cell is page layout, not data ("|  | The article … | "): its cell is the text.
    """
    lines = []
    for line in text.split("\n"):
        row = line.strip()
        if row.startswith("|") or row.endswith("|"):  # a table row, as trafilatura writes one
            cells = [cell.strip() for cell in row.strip("|").split(" | ")]
            filled = [cell for cell in cells if cell]
            line = filled[0] if len(filled) == 1 else " | ".join(filled)
        line = line.rstrip()
        if WORD.search(line):
            lines.append(line)
    return "\n".join(lines)


def is_extracted(origin: str) -> bool:
    """Whether a record read from ``origin`` (its file) is an article this module extracted from HTML."""
    return bool(origin) and suffix_of(origin) in WEB_SUFFIXES


def extract_article(html: bytes | str, url: str = "") -> dict[str, str]:
    """The main text of one HTML page and its metadata, by trafilatura (tables kept, comments out), tidied
    (``tidy_text``)."""
    import trafilatura

    document = None
    try:
        document = trafilatura.bare_extraction(
            html, url=url or None, with_metadata=True, include_comments=False, include_tables=True,
            deduplicate=False, fast=False)
    except (ValueError, TypeError, LookupError):  # undecodable or malformed input: no article
        document = None
    fields = {"text": "", **dict.fromkeys(METADATA, "")}
    if document is not None:
        values = document.as_dict() if hasattr(document, "as_dict") else dict(document)
        fields["text"] = tidy_text(values.get("text") or "")
        for key in METADATA:
            fields[key] = str(values.get(key) or "")
    if url:
        fields["url"] = url
    return fields


def _extract_item(item: tuple[str, bytes | None, dict[str, str]]) -> tuple[str, dict[str, str]]:
    where, payload, meta = item
    if payload is None:  # the file could not be read: pass the problem on
        return where, meta
    document = extract_article(payload, meta.get("url", ""))
    return where, {**document, **{k: v for k, v in meta.items() if v}}


def ordered_map(function: Callable, items: Iterable, workers: int = 1) -> Iterator:
    """``map(function, items)`` over a bounded process pool, results in input order."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1:
        yield from map(function, items)
        return
    pool = worker_context().Pool(workers)
    try:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(function, (item,)))
            while len(pending) >= 4 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()


def _html_pages(path: Path) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        yield f"{path}:1", handle.read(), {}


def _warc_pages(path: Path) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """(where, HTML bytes, WARC metadata) for every HTML response or resource record, in file order."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    with open(path, "rb") as handle:
        records = ArchiveIterator(handle)
        number = 0
        try:
            for number, record in enumerate(records, 1):
                if record.format != "warc":
                    number -= 1  # the problem is in this record, not the next
                    raise ValueError(f"a {record.format or 'non-WARC'} record, expected WARC/1.0 or WARC/1.1")
                page = _warc_page(record)
                if page is not None:
                    where = f"{path}:record {number} (offset {records.get_record_offset()})"
                    yield where, page[0], page[1]
        except (ArchiveLoadFailed, OSError, EOFError, ValueError, AttributeError) as exc:
            problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            yield f"{path}:record {number + 1}", None, {PROBLEM: f"not a readable WARC record ({problem})"}


def _warc_page(record) -> tuple[bytes, dict[str, str]] | None:
    if record.rec_type not in ("response", "resource"):
        return None
    if record.rec_type == "response" and record.http_headers is not None:
        status = record.http_headers.get_statuscode() or ""
        kind = record.http_headers.get_header("Content-Type") or ""
    else:
        status, kind = "200", record.rec_headers.get_header("Content-Type") or ""
    if not status.startswith("2") or not _is_html(kind):
        return None
    headers = record.rec_headers
    meta = {"url": headers.get_header("WARC-Target-URI") or "",
            "warc_record_id": headers.get_header("WARC-Record-ID") or "",
            "warc_date": headers.get_header("WARC-Date") or ""}
    return record.content_stream().read(), meta


def _is_html(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind in ("text/html", "application/xhtml+xml") or not kind


def iter_web_records(paths: str | Path | Iterable[str | Path], workers: int = 1) -> Iterator[tuple[str, dict[str, str]]]:
    """(where, document) for HTML and WARC files (gzipped or not), in order, extracted in one pool."""
    if isinstance(paths, (str, Path)):
        paths = [paths]

    def pages():
        for path in map(Path, paths):
            kind = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
            yield from _warc_pages(path) if kind.lower() in WARC_SUFFIXES else _html_pages(path)

    yield from ordered_map(_extract_item, pages(), workers)


def iter_html_documents(path: str | Path, workers: int = 1) -> Iterator[dict[str, Any]]:
    """One document per HTML file (``.html``, ``.htm``, gzipped or not): the article text and metadata."""
    yield from _documents(path, workers)


def iter_warc_documents(path: str | Path, workers: int = 1) -> Iterator[dict[str, Any]]:
    """One document per HTML response in a WARC file (``.warc``, ``.warc.gz``), with the WARC's URL,
    record id and date, extracted by ``workers`` processes and yielded in file order."""
    yield from _documents(path, workers)


def _documents(path, workers):
    from lmforge.errors import DataError

    for where, document in iter_web_records(path, workers):
        if PROBLEM in document:
            raise DataError(f"{where}: {document[PROBLEM]}")
        yield document
