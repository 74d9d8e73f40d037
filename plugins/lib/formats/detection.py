"""Which format a file holds: auto-detection over its first records, and ``columns`` renaming keys first.

Auto-detection looks at each of the file's first :data:`DETECT_SAMPLE` records and keeps the formats that fit
all of them: exactly one left is the format; none (records of different shapes) or several (a record that fits
two shapes) is a one-line error that names the file and record and asks for ``format=``.
"""

from __future__ import annotations

from lmforge import registry
from lmforge.errors import DataError
from lmforge.plugins.lib.data import Record, read_rows
from lmforge.plugins.lib.formats.base import DataFormat, record_keys

DETECT_SAMPLE = 200  # records looked at by auto-detection


def detect_format(record: dict, where: str, wanted: str = "auto") -> DataFormat:
    """The format of one record (or the one named by ``wanted``); ambiguous / unknown records are errors."""
    return _detect([(where, record)], where, wanted)


def _detect(samples: list[tuple[str, dict]], source: str, wanted: str = "auto") -> DataFormat:
    reg = registry()
    if wanted != "auto":
        return reg.get("data_format", wanted)()
    formats = [reg.get("data_format", name)() for name in reg.names("data_format")]
    candidates = list(formats)
    for where, record in samples:
        matches = [f for f in formats if f.detect(record)]
        keys = ", ".join(sorted(record)) or "(none)"
        if not matches:
            if "chosen" in record or "rejected" in record:  # a preference record, but no pair any format reads
                raise DataError(f"{where}: unrecognised preference record: a pair needs 'prompt', 'messages' "
                                "or 'conversations' with 'chosen' and 'rejected' (text or messages), or "
                                "'chosen' and 'rejected' as whole 'Human: … Assistant: …' dialogues; this "
                                f"record has {record_keys(record)}")
            raise DataError(f"{where}: unrecognised record (keys: {keys}); known formats: "
                            f"{', '.join(f.name for f in formats)}; set the stage's format= (or columns= to "
                            "rename keys)")
        remaining = [f for f in candidates if f.name in {m.name for m in matches}]
        if not remaining:
            first = ", ".join(c.name for c in candidates)
            raise DataError(f"{where}: mixed formats: this record (keys: {keys}) is "
                            f"{' or '.join(m.name for m in matches)}, earlier records are {first}; "
                            "one file must hold one format")
        candidates = remaining
    if len(candidates) > 1:
        where, record = samples[0]
        keys = ", ".join(sorted(record)) or "(none)"
        raise DataError(f"{where}: ambiguous records (keys: {keys}) fit formats "
                        f"{', '.join(f.name for f in candidates)}; set the stage's format= to one of them")
    return candidates[0]


def _rename(rows: list[Record], columns: dict[str, str] | None) -> list[Record]:
    if not columns:
        return rows
    renamed = []
    targets = set(columns.values())
    for row in rows:
        missing = [source for source in columns if source not in row.fields]
        if missing:
            raise DataError(f"{row.where} has no '{missing[0]}' (named in columns); keys: "
                            f"{', '.join(sorted(row.fields))}")
        fields = {key: value for key, value in row.fields.items() if key not in targets or key in columns}
        renamed.append(Record(row.where, {columns.get(key, key): value for key, value in fields.items()},
                              row.origin))
    return renamed


def _read(source, fmt: str, columns: dict[str, str] | None) -> tuple[DataFormat, list[tuple[DataFormat, Record]]]:
    """Rows with the format of each: detected per file (a mixture may join files of different formats)."""
    rows = _rename(read_rows(source), columns)
    groups: dict[str, list[Record]] = {}
    for row in rows:
        groups.setdefault(row.origin, []).append(row)
    adapters = {}
    for origin, members in groups.items():
        samples = [(row.where, row.fields) for row in members[:DETECT_SAMPLE]]
        adapters[origin] = _detect(samples, origin or str(source), fmt)
    return adapters[rows[0].origin], [(adapters[row.origin], row) for row in rows]


def read_format(source, fmt: str = "auto",
                columns: dict[str, str] | None = None) -> tuple[DataFormat, list[dict]]:
    """The records of a data input (keys renamed by ``columns``) and the format adapter that reads them.

    ``source`` is any data input :mod:`lmforge.plugins.lib.data` reads: a file, glob, directory, saved or Hub
    dataset, or a mixture."""
    adapter, rows = _read(source, fmt, columns)
    return adapter, [row.fields for _, row in rows]
