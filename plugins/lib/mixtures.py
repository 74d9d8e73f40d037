"""Mixtures of data sources read as one stream, interleaved so every prefix holds each source at its share.

Why our own and not ``datasets.interleave_datasets``: the reader streams rows of every kind (JSON lines
with file:line, text modes, web pages) that are not ``datasets`` objects, and its random choice of the next
source drifts by about sqrt(n) rows over a prefix of n; the deterministic schedule here stays within one row.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

from lmforge.sources import JSON_SUFFIXES, TEXT_SUFFIXES, WEB_SUFFIXES, DataPart, suffix_of


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def interleave(streams: list[Iterator], shares: list[float]) -> Iterator:
    """Rows of several streams merged so that each stream's share of every prefix follows ``shares``.

    Deterministic (no draw): the next row comes from the stream that is furthest behind its share — the
    smooth weighted round robin of load balancers. ``datasets.interleave_datasets`` samples the next
    source at random instead; over short prefixes that drifts by sqrt(n), this does by at most one row.
    A stream that ends early (its share was an estimate) leaves the rest to the others.
    """
    total = sum(shares) or 1.0
    shares = [share / total for share in shares]
    live = {index: iter(stream) for index, stream in enumerate(streams) if shares[index] > 0}
    for index, stream in enumerate(streams):  # a source expected to be empty is still read (its errors too)
        if index not in live:
            live[index] = iter(stream)
            shares[index] = 1e-9
    taken = [0] * len(streams)
    emitted = 0
    while live:
        emitted += 1
        index = max(live, key=lambda i: (shares[i] * emitted - taken[i], -i))
        try:
            row = next(live[index])
        except StopIteration:
            del live[index]
            emitted -= 1
            continue
        taken[index] += 1
        yield row


def expected_rows(part: DataPart, txt_mode: str, part_rows, file_rows) -> float:
    """Rows a mixture part will give (after ``limit`` and ``weight``), counted cheaply where the format allows.

    JSON lines and line-mode text: non-blank lines; parquet: its metadata; csv/tsv: lines less the header;
    a saved dataset: its row count; one row per file for whole-file text and HTML; other kinds (a Hub
    dataset, JSON arrays, WARC) by reading the part once (``part_rows`` / ``file_rows``: the reader's own).
    """
    count = 0.0
    try:
        if part.kind == "saved":
            from datasets import load_from_disk

            saved = load_from_disk(str(part.files[0]))
            count = saved[part.split or next(iter(saved))].num_rows if hasattr(saved, "keys") else saved.num_rows
        elif part.kind == "files":
            for path in part.files:
                count += _file_rows_estimate(path, txt_mode, file_rows)
        else:
            count = sum(1 for _ in part_rows(part, "text", txt_mode, 1000, 1))
    except Exception:  # noqa: BLE001 — an estimate only: a bad file is reported when its rows are read
        count = 1.0
    if part.limit is not None:
        count = min(count, part.limit)
    return count * part.weight


def _file_rows_estimate(path: Path, txt_mode: str, file_rows) -> float:
    kind = suffix_of(path)
    if kind in JSON_SUFFIXES and kind != ".json" or (kind in TEXT_SUFFIXES and txt_mode == "line"):
        with _open_binary(path) as handle:
            return float(sum(1 for raw in handle if raw.strip()))
    if kind in TEXT_SUFFIXES and txt_mode == "file" or kind in WEB_SUFFIXES and kind != ".warc":
        return 1.0
    if kind == ".parquet":
        import pyarrow.parquet as pq

        return float(pq.ParquetFile(path).metadata.num_rows)
    if kind in (".csv", ".tsv"):
        with _open_binary(path) as handle:
            return float(max(sum(1 for raw in handle if raw.strip()) - 1, 0))
    return float(sum(1 for _ in file_rows(path, "text", txt_mode)))
