"""Streaming document readers for the cleaner: every input kind, with file:line for each bad record.

Kinds: .txt/.md (one document per file, per line, or per blank-line-separated paragraph), .jsonl/.ndjson,
.json (a list of objects), .parquet, a saved Hugging Face dataset directory, a directory of such files,
and globs of shards (``data/*.jsonl.gz``). Every kind may be gzip-compressed except parquet/datasets.

Reading is streamed record by record (parquet and datasets in batches), so memory stays bounded however
large the input. A bad record (invalid UTF-8, malformed JSON, a missing or non-string text field) is
yielded as a ``BadRecord`` naming ``file:line``; the cleaner's ``on_bad_input`` policy decides whether
it is skipped and reported, or fails the run.
"""

from __future__ import annotations

import glob
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import DataError

TEXT_SUFFIXES = {".txt", ".text", ".md"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
WEB_SUFFIXES = {".html", ".htm", ".xhtml", ".warc"}  # read by web.py: the article out of each page
READABLE = TEXT_SUFFIXES | JSONL_SUFFIXES | WEB_SUFFIXES | {".json", ".parquet"}


@dataclass
class Record:
    where: str  # file:line or file:record-index
    fields: dict[str, Any]


@dataclass
class BadRecord:
    where: str
    problem: str


def input_files(spec: str | Path) -> list[Path]:
    """The files (or saved-dataset dirs) an input names: a file, a directory, or a glob; sorted."""
    text = str(spec)
    if any(ch in text for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        if not matches:
            raise DataError(f"{text}: the pattern matches no files")
        return [p for m in matches for p in input_files(m)] if any(m.is_dir() for m in matches) else matches
    path = Path(text)
    if not path.exists():
        raise DataError(f"{path}: not found")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            return [path]
        files = sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p) in READABLE)
        if not files:
            raise DataError(f"{path}: no .txt/.jsonl/.json/.parquet/.html/.warc files or saved dataset inside")
        return files
    if _suffix(path) not in READABLE:
        raise DataError(f"{path}: unsupported file type; expected one of {', '.join(sorted(READABLE))} (or .gz)")
    return [path]


def _suffix(path: Path) -> str:
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_records(spec, text_field: str = "text", txt_mode: str = "file",
                 batch_size: int = 1000, workers: int = 1) -> Iterator[Record | BadRecord]:
    """Every record of the input in a fixed order (files sorted, records in file order).

    HTML and WARC files become one record per page (the extracted article, URL and metadata), extracted
    by ``workers`` processes; consecutive web files share one pool."""
    if txt_mode not in ("file", "line", "paragraph"):
        raise DataError(f"cleaner.txt_mode: '{txt_mode}' is not one of file, line, paragraph")
    files = input_files(spec)
    index = 0
    while index < len(files):
        path = files[index]
        index += 1
        if not path.is_dir() and _suffix(path).lower() in WEB_SUFFIXES:
            run = [path]
            while index < len(files) and not files[index].is_dir() and _suffix(files[index]).lower() in WEB_SUFFIXES:
                run.append(files[index])
                index += 1
            yield from _web(run, text_field, workers)
            continue
        if path.is_dir():
            yield from _saved_dataset(path, text_field, batch_size)
            continue
        kind = _suffix(path)
        if kind in TEXT_SUFFIXES:
            yield from _text_file(path, text_field, txt_mode)
        elif kind in JSONL_SUFFIXES:
            yield from _jsonl(path, text_field)
        elif kind == ".json":
            yield from _json(path, text_field)
        else:
            yield from _parquet(path, text_field, batch_size)


def _web(paths: list[Path], text_field: str, workers: int):
    from .web import PROBLEM, iter_web_records

    for where, document in iter_web_records(paths, workers):
        if PROBLEM in document:
            yield BadRecord(where, document[PROBLEM])
            continue
        text = document.pop("text")
        yield Record(where, {text_field: text, **document})


def _checked(where: str, fields: Any, text_field: str) -> Record | BadRecord:
    if not isinstance(fields, dict):
        return BadRecord(where, f"a {type(fields).__name__}, expected a JSON object")
    if text_field not in fields:
        return BadRecord(where, f"no '{text_field}' field (fields: {', '.join(map(str, fields)) or 'none'})")
    if not isinstance(fields[text_field], str):
        return BadRecord(where, f"field '{text_field}' is {type(fields[text_field]).__name__}, expected a string")
    return Record(where, fields)


def _text_file(path: Path, text_field: str, mode: str):
    with _open_binary(path) as handle:
        if mode == "file":
            data = handle.read()
            try:
                yield Record(f"{path}:1", {text_field: data.decode("utf-8")})
            except UnicodeDecodeError as exc:
                line = data[:exc.start].count(b"\n") + 1
                yield BadRecord(f"{path}:{line}", f"invalid UTF-8 at byte {exc.start}")
            return
        paragraph: list[str] = []
        start = 1
        bad = False
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadRecord(f"{path}:{number}", f"invalid UTF-8 at byte {exc.start} of the line")
                bad = mode == "paragraph"
                continue
            if mode == "line":
                if line.strip():
                    yield Record(f"{path}:{number}", {text_field: line.rstrip("\r\n")})
                continue
            if line.strip():
                if not paragraph:
                    start = number
                paragraph.append(line)
            elif paragraph:
                if not bad:
                    yield Record(f"{path}:{start}", {text_field: "".join(paragraph).strip()})
                paragraph, bad = [], False
        if paragraph and not bad:
            yield Record(f"{path}:{start}", {text_field: "".join(paragraph).strip()})


def _jsonl(path: Path, text_field: str):
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadRecord(where, f"invalid UTF-8 at byte {exc.start} of the line")
                continue
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as exc:
                yield BadRecord(where, f"invalid JSON line ({exc.msg})")
                continue
            yield _checked(where, fields, text_field)


def _json(path: Path, text_field: str):
    with _open_binary(path) as handle:
        data = handle.read()
    try:
        records = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        yield BadRecord(f"{path}:{line}", f"invalid UTF-8 at byte {exc.start}")
        return
    except json.JSONDecodeError as exc:
        yield BadRecord(f"{path}:{exc.lineno}", f"invalid JSON ({exc.msg})")
        return
    if isinstance(records, dict):
        records = next((v for v in records.values() if isinstance(v, list)), [records])
    for index, fields in enumerate(records):
        yield _checked(f"{path}:record {index}", fields, text_field)


def _parquet(path: Path, text_field: str, batch_size: int):
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    if text_field not in parquet.schema_arrow.names:
        yield BadRecord(f"{path}", f"no '{text_field}' column (columns: {', '.join(parquet.schema_arrow.names)})")
        return
    index = 0
    for batch in parquet.iter_batches(batch_size=batch_size):
        for fields in batch.to_pylist():
            yield _checked(f"{path}:row {index}", fields, text_field)
            index += 1


def _saved_dataset(path: Path, text_field: str, batch_size: int):
    from datasets import load_from_disk

    dataset = load_from_disk(str(path))  # memory-mapped arrow: slices are read on demand
    if hasattr(dataset, "keys"):  # a DatasetDict: every split, in name order
        splits = [(f"{path}[{name}]", dataset[name]) for name in sorted(dataset.keys())]
    else:
        splits = [(str(path), dataset)]
    for label, split in splits:
        if text_field not in split.column_names:
            yield BadRecord(label, f"no '{text_field}' column (columns: {', '.join(split.column_names)})")
            continue
        for start in range(0, len(split), batch_size):
            for offset, fields in enumerate(_rows(split[start:start + batch_size])):
                yield _checked(f"{label}:row {start + offset}", fields, text_field)


def _rows(columns: dict[str, list]) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*(columns[n] for n in names))]
