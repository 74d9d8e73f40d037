"""The one data reader: every stage reads its rows here, whatever form the data input takes.

Forms (resolved by :func:`lmforge.sources.resolve_data`): a file (.jsonl/.ndjson, .json, .csv, .tsv,
.parquet, .arrow, .txt/.md; any of the text kinds gzip-compressed), a glob, a directory of such files, a
``save_to_disk`` directory, a Hub dataset id (``org/name``, ``org/name:subset``, ``split=``) from the HF
cache, and a mixture: a list of those, each with an optional ``weight`` (rows count that many times: 2 =
every row twice, 0.5 = a fixed, seeded half) and ``limit`` (the first N rows). The sources of a mixture
are interleaved, not concatenated: each source's share of any prefix of the stream is its share of the
whole (its rows x weight), so a 50/50 mixture is 50/50 over the first thousand rows too, not one source
and then the other.

Why not hand everything to ``datasets.load_dataset``: for JSON it reports a malformed line as a pyarrow
offset in a traceback, and a non-UTF-8 byte as a byte position; lmforge promises ``file:line``. So JSON
lines, JSON and text files are parsed here, line by line (streamed, so memory stays flat, and no arrow cache
is written for a 300-row SFT file), while the columnar and structured kinds — csv/tsv, parquet, arrow, saved
datasets and Hub snapshots (subsets, splits, README configs) — are read by ``datasets`` in streaming mode.
If ``datasets`` fails on a Hub snapshot's JSON, the files are re-scanned here to name the bad line.

Every row carries where it came from: ``file:line`` for JSON lines, text and csv/tsv (the line a record
starts on; the header is line 1), ``file: record N`` (its 1-based number within its own file) for the other
kinds. A bad row is yielded as a :class:`BadRecord` by :func:`iter_rows` (the cleaner decides to skip or
fail); :func:`read_rows`, :func:`read_records` and :func:`iter_texts` raise it as a one-line ``DataError``.

HTML and WARC files (.html/.htm/.xhtml/.warc, gzipped or not) are handed to the cleaner's article
extraction (``lmforge.plugins.cleaners.web``): one row per page, ``{text, url, title, …}``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import DataError
from lmforge.plugins.lib.mixtures import expected_rows, interleave
from lmforge.sources import (
    JSON_SUFFIXES,
    TEXT_SUFFIXES,
    WEB_SUFFIXES,
    DataPart,
    DataSource,
    resolve_data,
    suffix_of,
)

TXT_MODES = ("file", "line", "paragraph", "chunk")
CHUNK_CHARS = 1 << 16  # txt_mode=chunk: pieces of about this many characters, cut at line ends


@dataclass
class Record:
    """One row: ``fields`` and where it came from (``file:line`` / ``file: record N``, both 1-based)."""

    where: str
    fields: dict[str, Any]
    origin: str = ""  # the file (or dataset split) it came from: one data format per origin


@dataclass
class BadRecord:
    where: str
    problem: str

    def error(self) -> DataError:
        return DataError(f"{self.where}: {self.problem}")


# ------------------------------------------------------------------------------------------ public API

def iter_rows(spec, text_field: str | None = None, txt_mode: str = "file", batch_size: int = 1000,
              seed: int = 0, workers: int = 1) -> Iterator[Record | BadRecord]:
    """Every row of a data input, streamed, in a fixed order (sources in order, files sorted, rows in file
    order), with mixture weights and limits applied.

    ``text_field`` set: a row without a string in that field is a :class:`BadRecord`, and text files yield
    ``{text_field: text}``. ``txt_mode``: a text file is one row per ``file``, ``line``, ``paragraph``
    (blank-line separated), or ``chunk`` (pieces of about 64k characters cut at line ends, for very large text).
    ``workers``: processes extracting the articles of HTML / WARC files.
    """
    if txt_mode not in TXT_MODES:
        raise DataError(f"txt_mode: '{txt_mode}' is not one of {', '.join(TXT_MODES)}")
    source = resolve_data(spec)
    streams = []
    for number, part in enumerate(source.parts):
        rows = _part_rows(part, text_field or "text", txt_mode, batch_size, workers)
        if text_field:
            rows = (_checked(r, text_field) for r in rows)
        streams.append(_weighted(rows, part, seed + number))
    if len(streams) == 1:
        yield from streams[0]
        return
    shares = [expected_rows(part, txt_mode, _part_rows, file_rows) for part in source.parts]
    yield from interleave(streams, shares)


def read_rows(spec, text_field: str | None = None, txt_mode: str = "file") -> list[Record]:
    """All rows of a data input in memory (for SFT / preference / prompt sets); the first bad row raises."""
    rows = []
    for row in iter_rows(spec, text_field, txt_mode):
        if isinstance(row, BadRecord):
            raise row.error()
        rows.append(row)
    if not rows:
        raise DataError(f"{_label(spec)}: no records")
    return rows


def read_records(spec) -> list[dict[str, Any]]:
    """The records (dicts) of a data input; a malformed one raises ``DataError`` naming file:line."""
    return [row.fields for row in read_rows(spec)]


def iter_texts(spec, text_field: str = "text", batch_size: int = 1000,
               txt_mode: str = "file") -> Iterator[list[str]]:
    """Batches of texts from any data input, streamed; a row without the text field raises ``DataError``."""
    batch: list[str] = []
    for row in iter_rows(spec, text_field, txt_mode, batch_size):
        if isinstance(row, BadRecord):
            raise row.error()
        batch.append(row.fields[text_field])
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def is_text_only(spec) -> bool:
    """True when every file of the input is a text file (.txt/.md): rows are lines, not records."""
    source = resolve_data(spec)
    return all(part.kind == "files" and all(suffix_of(f) in TEXT_SUFFIXES for f in part.files)
               for part in source.parts)


def _label(spec) -> str:
    return str(spec) if isinstance(spec, DataSource) else str(resolve_data(spec))


# ------------------------------------------------------------------------------------ mixture options

def _weighted(rows: Iterator, part: DataPart, seed: int) -> Iterator:
    """``limit``: the first N good rows; ``weight``: each row floor(w) times plus once more with probability
    frac(w), decided by a hash of (seed, row number) so the choice is fixed and needs no row count."""
    if part.limit is None and part.weight == 1.0:
        yield from rows
        return
    whole, fraction = int(part.weight), part.weight - int(part.weight)
    taken = 0
    for number, row in enumerate(rows):
        if isinstance(row, BadRecord):
            yield row
            continue
        if part.limit is not None and taken >= part.limit:
            return
        taken += 1
        copies = whole
        if fraction:
            draw = int.from_bytes(hashlib.blake2b(f"{seed}:{number}".encode(), digest_size=8).digest(), "big")
            copies += draw / 2 ** 64 < fraction
        for _ in range(copies):
            yield row


def _checked(row, text_field: str):
    if isinstance(row, BadRecord):
        return row
    fields = row.fields
    if text_field not in fields:
        return BadRecord(row.where, f"no '{text_field}' field (fields: {', '.join(map(str, fields)) or 'none'})")
    if not isinstance(fields[text_field], str):
        return BadRecord(row.where, f"expected a string field '{text_field}', got "
                                    f"{type(fields[text_field]).__name__}")
    return row


# ------------------------------------------------------------------------------------------- by kind

def _part_rows(part: DataPart, text_field: str, txt_mode: str, batch_size: int, workers: int) -> Iterator:
    if part.kind == "saved":
        yield from _saved_dataset(part.files[0], part.split, batch_size)
        return
    if part.kind == "hub":
        yield from _hub_dataset(part, batch_size)
        return
    if part.kind == "tokens":
        raise DataError(f"{part.ref}: a directory of token shards, not text; only the pretrainer's text input "
                        "reads tokens")
    files = list(part.files)
    index = 0
    while index < len(files):
        if suffix_of(files[index]) in WEB_SUFFIXES:  # consecutive web files share one extraction pool
            run = [files[index]]
            while index + len(run) < len(files) and suffix_of(files[index + len(run)]) in WEB_SUFFIXES:
                run.append(files[index + len(run)])
            index += len(run)
            yield from _web_rows(run, text_field, workers)
            continue
        yield from file_rows(files[index], text_field, txt_mode, batch_size)
        index += 1


def file_rows(path: Path, text_field: str = "text", txt_mode: str = "file",
              batch_size: int = 1000) -> Iterator[Record | BadRecord]:
    """The rows of one data file, by its suffix."""
    kind = suffix_of(path)
    if kind in TEXT_SUFFIXES:
        yield from _text_file(path, text_field, txt_mode)
    elif kind == ".json":
        yield from _json(path)
    elif kind in JSON_SUFFIXES:
        yield from _jsonl(path)
    elif kind in WEB_SUFFIXES:
        yield from _web_rows([path], text_field)
    else:
        yield from _table(path, kind, batch_size)


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _object(where: str, fields: Any, origin: str) -> Record | BadRecord:
    if not isinstance(fields, dict):
        return BadRecord(where, f"a {type(fields).__name__}, expected a JSON object")
    return Record(where, fields, origin)


def _jsonl(path: Path):
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadRecord(f"{path}:{number}", f"invalid UTF-8 (byte {exc.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as exc:
                yield BadRecord(f"{path}:{number}", f"invalid JSON line ({exc.msg})")
                continue
            yield _object(f"{path}:{number}", fields, str(path))


def _json(path: Path):
    with _open_binary(path) as handle:
        data = handle.read()
    try:
        records = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        yield BadRecord(f"{path}:{line}", "invalid UTF-8")
        return
    except json.JSONDecodeError as exc:
        yield BadRecord(f"{path}:{exc.lineno}", f"invalid JSON ({exc.msg})")
        return
    if isinstance(records, dict):
        records = next((v for v in records.values() if isinstance(v, list)), [records])
    if not isinstance(records, list):
        yield BadRecord(f"{path}", f"a JSON {type(records).__name__}, expected a list of objects")
        return
    for number, fields in enumerate(records, 1):
        yield _object(f"{path}: record {number}", fields, str(path))


def _text_file(path: Path, text_field: str, mode: str):
    with _open_binary(path) as handle:
        if mode == "file":
            data = handle.read()
            try:
                yield Record(f"{path}:1", {text_field: data.decode("utf-8")}, str(path))
            except UnicodeDecodeError as exc:
                line = data[:exc.start].count(b"\n") + 1
                yield BadRecord(f"{path}:{line}", "invalid UTF-8")
            return
        piece: list[str] = []
        start, size, bad = 1, 0, False
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield BadRecord(f"{path}:{number}", "invalid UTF-8")
                bad = mode == "paragraph"
                continue
            if mode == "line":
                if line.strip():
                    yield Record(f"{path}:{number}", {text_field: line.rstrip("\r\n")}, str(path))
                continue
            if mode == "chunk":
                if piece and size + len(line) > CHUNK_CHARS:
                    yield Record(f"{path}:{start}", {text_field: "".join(piece)}, str(path))
                    piece, size = [], 0
                if not piece:
                    start = number
                piece.append(line)
                size += len(line)
                continue
            if line.strip():
                if not piece:
                    start = number
                piece.append(line)
            elif piece:
                if not bad:
                    yield Record(f"{path}:{start}", {text_field: "".join(piece).strip()}, str(path))
                piece, bad = [], False
        if piece and not bad:
            text = "".join(piece)
            yield Record(f"{path}:{start}", {text_field: text if mode == "chunk" else text.strip()}, str(path))


def _web_rows(paths: list[Path], text_field: str, workers: int = 1):
    """HTML / WARC pages through the cleaner's web extraction: the article as text, with URL and metadata."""
    from lmforge.plugins.cleaners.web import PROBLEM, iter_web_records

    for where, document in iter_web_records(paths, workers):
        if PROBLEM in document:
            yield BadRecord(where, document[PROBLEM])
            continue
        text = document.pop("text")
        yield Record(where, {text_field: text, **document}, where.rsplit(":", 1)[0])


def _rows_of(table_batch: dict[str, list]) -> list[dict[str, Any]]:
    names = list(table_batch)
    return [dict(zip(names, values)) for values in zip(*(table_batch[n] for n in names))]


def _table(path: Path, kind: str, batch_size: int):
    """csv / tsv / parquet / arrow through ``datasets`` (streamed); a file it cannot parse is one line.

    A csv/tsv row is named by the file line it starts on (:func:`_csv_lines`), a parquet/arrow row by its
    1-based number."""
    import datasets

    builder = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".arrow": "arrow"}[kind]
    kwargs = {"sep": "\t"} if kind == ".tsv" else {}
    scan = lines = _csv_lines(path, kwargs.get("sep", ",")) if builder == "csv" else None
    index = 0
    try:
        dataset = datasets.load_dataset(builder, data_files=[str(path)], split="train", streaming=True, **kwargs)
        for batch in dataset.iter(batch_size=batch_size):
            for fields in _rows_of(batch):
                index += 1
                line = _line_of(lines, fields) if lines is not None else None
                if line is None:
                    lines = None  # the two readers disagree: from here on, the record's number
                yield Record(f"{path}:{line}" if line else f"{path}: record {index}", fields, str(path))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a parser's message, reported in one line with the file
        # a csv parser's message names the line itself; the rows read so far count batches, not the bad row
        at = f"{path}: record {index + 1}" if index and builder != "csv" else str(path)
        yield BadRecord(at, f"cannot read as {kind[1:]}: {_first_line(exc)}")
    finally:
        if scan is not None:
            scan.close()


def _csv_lines(path: Path, sep: str) -> Iterator[tuple[int, list[str]]]:
    """The data rows of a csv/tsv file as Python's ``csv`` module reads them: ``(line the row starts on,
    fields)``, header and blank lines skipped as pandas (``datasets``' csv reader) skips them."""
    import csv

    csv.field_size_limit(max(csv.field_size_limit(), 2 ** 31 - 1))  # long documents are one field
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter=sep)
        header, end = False, 0
        try:
            for fields in reader:
                start, end = end + 1, reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # a blank line
                if not header:
                    header = True
                    continue
                yield start, fields
        except csv.Error:
            return


def _line_of(lines: Iterator[tuple[int, list[str]]], fields: dict[str, Any]) -> int | None:
    """The file line of the next csv row, when the ``csv`` module's next row is that row (its text values,
    the ones pandas does not convert, read the same); None when it is not."""
    start, raw = next(lines, (None, None))
    if raw is None or len(raw) > len(fields):
        return None
    for value, text in zip(fields.values(), raw):
        if isinstance(value, str) and value != text:
            return None
    return start


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _saved_dataset(path: Path, split: str | None, batch_size: int):
    from datasets import load_from_disk

    dataset = load_from_disk(str(path))  # memory-mapped arrow: batches are read on demand
    if hasattr(dataset, "keys"):  # a DatasetDict
        names = sorted(dataset.keys())
        if split is not None:
            if split not in dataset:
                yield BadRecord(str(path), f"no split '{split}'; splits: {', '.join(names)}")
                return
            names = [split]
        splits = [(f"{path}[{name}]", dataset[name]) for name in names]
    else:
        if split is not None:
            yield BadRecord(str(path), f"split='{split}' given, but the saved dataset is a single Dataset")
            return
        splits = [(str(path), dataset)]
    for label, part in splits:
        index = 0
        for batch in part.iter(batch_size=batch_size):
            for fields in _rows_of(batch):
                index += 1
                yield Record(f"{label}: record {index}", fields, label)


def _hub_dataset(part: DataPart, batch_size: int):
    """A Hub dataset from its cached snapshot, read by ``datasets`` (README configs, subsets, splits)."""
    import datasets

    snapshot = part.files[0]
    label = part.ref if part.split is None else f"{part.ref}[{part.split}]"
    try:
        loaded = datasets.load_dataset(str(snapshot), name=part.subset, streaming=True)
    except Exception as exc:  # noqa: BLE001
        yield BadRecord(part.ref, f"datasets cannot read the cached snapshot {snapshot}: {_first_line(exc)}")
        return
    names = list(loaded.keys())
    split = part.split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
    if split is None or split not in loaded:
        yield BadRecord(part.ref, (f"no split '{part.split}'" if part.split else "several splits and no 'train'")
                        + f"; splits: {', '.join(names)}; set split=")
        return
    label = f"{part.ref}[{split}]"
    index = 0
    try:
        for batch in loaded[split].iter(batch_size=batch_size):
            for fields in _rows_of(batch):
                index += 1
                yield Record(f"{label}: record {index}", fields, label)
    except Exception as exc:  # noqa: BLE001 - re-locate a parse error in the snapshot's JSON files
        yield _relocate(snapshot, label, index + 1, exc)


def _relocate(snapshot: Path, label: str, index: int, exc: BaseException) -> BadRecord:
    for path in sorted(snapshot.rglob("*")):
        if path.is_file() and suffix_of(path) in JSON_SUFFIXES:
            for row in file_rows(path):
                if isinstance(row, BadRecord):
                    return row
    return BadRecord(f"{label}: record {index}", f"cannot read: {_first_line(exc)}")


def write_dataset_card(output_dir: str | Path, title: str, pattern: str = "*.parquet") -> None:
    """A README.md whose metadata tells vanilla ``datasets.load_dataset(output_dir)`` which files are data.

    Without it, the manifest and reports beside the parquet shards would be read as data files too.
    """
    card = ("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            f"    path: \"{pattern}\"\n---\n# {title}\n\nWritten by lmforge; see manifest.json for how.\n")
    (Path(output_dir) / "README.md").write_text(card)
