"""What the standard cleaner writes: the kept documents as parquet shards, the removed ones for the audit page."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def document_id(text: str) -> str:
    """A document's id for the audit trail and the allow-list: a hash of its text as read."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class AuditWriter:
    """removed.jsonl: every removed document (up to ``limit``) with its id, file:line, step, reason and text,
    for ``lmforge audit`` to show a person, who can mark a removal as wrong. Written under a temporary name
    and renamed by ``close``, so a failed run leaves nothing half-written."""

    def __init__(self, path: Path, limit: int):
        self.path, self.limit, self.count = path, limit, 0
        self.partial = path.with_name(path.name + ".partial")
        self.handle = None

    def add(self, where: str, text: str, step: str, reason: str) -> None:
        if self.count >= self.limit:
            return
        if self.handle is None:
            self.handle = open(self.partial, "w", encoding="utf-8")  # noqa: SIM115 (open across add() calls; close() ends it)
        self.count += 1
        self.handle.write(json.dumps({"id": document_id(text), "where": where, "step": step, "reason": reason,
                                      "text": text}, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.partial.replace(self.path)

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.partial.unlink(missing_ok=True)


class ShardWriter:
    """Kept records into data-00000.parquet, data-00001.parquet … with one schema (the first shard's)."""

    def __init__(self, directory: Path, shard_docs: int):
        self.directory = directory
        self.shard_docs = max(1, shard_docs)
        self.buffer: list[dict[str, Any]] = []
        self.schema = None
        self.files: list[str] = []
        self.rows_written = 0

    def add(self, fields: dict[str, Any]) -> None:
        self.buffer.append(fields)
        if len(self.buffer) >= self.shard_docs:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.buffer:
            return
        if self.schema is None:
            table = pa.Table.from_pylist(self.buffer)
            self.schema = table.schema
        else:
            table = pa.Table.from_pylist(self.buffer, schema=self.schema)
        name = f"data-{len(self.files):05d}.parquet"
        pq.write_table(table, self.directory / name)
        self.files.append(name)
        self.rows_written += len(self.buffer)
        self.buffer = []

    def close(self) -> None:
        self.flush()
