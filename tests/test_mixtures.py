"""Mixtures are interleaved by weight: every prefix of the stream holds each source at its share."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
from lmforge.plugins.cleaners.standard import StandardCleaner
from lmforge.plugins.lib.data import interleave, iter_texts, read_records


def _jsonl(path, source: str, n: int):
    path.write_text("".join(json.dumps({"text": f"{source} row {i}", "source": source}) + "\n" for i in range(n)))
    return str(path)


def _shares(rows, n):
    counts = Counter(row["source"] for row in rows[:n])
    return {source: count / n for source, count in counts.items()}


def test_a_50_50_mixture_is_50_50_over_the_first_tenth(tmp_path):
    big = _jsonl(tmp_path / "big.jsonl", "big", 1000)
    small = _jsonl(tmp_path / "small.jsonl", "small", 200)
    mixture = [{"path": big}, {"path": small, "weight": 5}]  # 1000 rows each way: a 50/50 mixture
    rows = read_records(mixture)
    assert len(rows) == 2000
    first_tenth = _shares(rows, len(rows) // 10)
    assert abs(first_tenth["big"] - 0.5) <= 0.05 and abs(first_tenth["small"] - 0.5) <= 0.05
    for prefix in (10, 50, 333, 1234):  # any prefix, not only the first tenth
        assert abs(_shares(rows, prefix)["big"] - 0.5) <= 0.05
    # the same rows as the concatenation (weights and limits unchanged), only the order differs
    concatenated = read_records([{"path": big}]) + 5 * read_records([{"path": small}])
    assert Counter(json.dumps(r, sort_keys=True) for r in rows) == Counter(
        json.dumps(r, sort_keys=True) for r in concatenated)
    assert rows == read_records(mixture)  # deterministic


def test_shares_follow_weights_across_formats(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"text line {i}\n" for i in range(300)))
    table = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": [f"parquet row {i}" for i in range(100)]}), table)
    texts = [t for batch in iter_texts([{"path": str(lines)}, {"path": str(table), "weight": 1}], txt_mode="line")
             for t in batch]
    assert len(texts) == 400
    head = texts[:40]  # 300 : 100 -> 3 : 1 over the first tenth
    assert sum(t.startswith("parquet") for t in head) == 10
    limited = read_records([{"path": str(table), "limit": 10}, {"path": str(table), "weight": 0.0}])
    assert len(limited) == 10  # a zero-weight source contributes nothing and does not stall the stream


def test_interleave_gives_the_rest_to_the_others_when_a_share_was_overestimated():
    rows = list(interleave([iter(["a"] * 3), iter(["b"] * 10)], [10, 10]))
    assert rows[:6] == ["a", "b", "a", "b", "a", "b"] and rows.count("b") == 10 and len(rows) == 13


def test_the_cleaner_keeps_a_mixture_interleaved(tmp_path, tiny_context):
    prose = ("The committee met on Tuesday to discuss the new library building, and members agreed that the "
             "reading rooms should stay open later in the evening for everyone who works during the day.")
    for name, n in (("news", 200), ("books", 50)):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"text": f"{prose} {name.title()} item {i} of its collection."}) + "\n" for i in range(n)))
    out = tmp_path / "out"
    out.mkdir()
    source = [{"path": str(tmp_path / "news.jsonl")}, {"path": str(tmp_path / "books.jsonl"), "weight": 4}]
    StandardCleaner(workers=1, steps=["normalize"]).run({"text": source}, out, tiny_context)
    texts = pq.read_table(sorted(out.glob("data-*.parquet"))).column("text").to_pylist()
    assert len(texts) == 400
    first_tenth = texts[:40]
    assert abs(sum("Books item" in t for t in first_tenth) / 40 - 0.5) <= 0.05
