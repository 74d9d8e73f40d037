"""The standard cleaner as a stage: every input kind, the bad-input policy with file:line, the report's
bookkeeping, determinism across worker counts, and what it does to real web text (menus, cookie banners
and script lines out, article prose in)."""

from __future__ import annotations

import gzip
import json
from itertools import pairwise

import lmforge
import pyarrow.parquet as pq
import pytest
from lmforge.errors import DataError
from lmforge.plugins.cleaners.basic import BasicCleaner
from lmforge.plugins.cleaners.standard import StandardCleaner

PROSE = ("The committee met on Tuesday to discuss the new library building. Members agreed that the "
         "reading rooms should stay open later in the evening, and that the children's section needs "
         "more space. The architect presented three designs, and the vote will be held next month after "
         "residents have had the chance to comment on each of them.")


def prose(i: int) -> str:
    return f"{PROSE} This is report number {['one', 'two', 'three', 'four', 'five', 'six'][i]} of the series."


def clean(tmp_path, source, context, name="out", **params):
    out = tmp_path / name
    out.mkdir()
    params.setdefault("workers", 1)
    params.setdefault("steps", ["normalize", "gopher_quality", "exact_dedup"])
    StandardCleaner(**params).run({"text": str(source)}, out, context)
    table = pq.read_table(sorted(out.glob("data-*.parquet")))
    return table.to_pylist(), json.loads((out / "report.json").read_text())


def test_text_modes_jsonl_json_parquet_dataset_and_globs(tmp_path, tiny_context):
    import pyarrow as pa
    from datasets import Dataset

    (tmp_path / "one.txt").write_text(prose(0))
    rows, _ = clean(tmp_path, tmp_path / "one.txt", tiny_context, "file_mode")
    assert len(rows) == 1
    (tmp_path / "lines.txt").write_text("\n".join(prose(i) for i in range(3)) + "\n\n")
    rows, _ = clean(tmp_path, tmp_path / "lines.txt", tiny_context, "line_mode", txt_mode="line")
    assert len(rows) == 3
    (tmp_path / "paras.md").write_text(f"{prose(0)}\n{prose(1)}\n\n\n{prose(2)}\n")
    rows, _ = clean(tmp_path, tmp_path / "paras.md", tiny_context, "para_mode", txt_mode="paragraph")
    assert [r["text"].count("report number") for r in rows] == [2, 1]

    shards = tmp_path / "shards"
    shards.mkdir()
    with gzip.open(shards / "a.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"body": prose(0), "url": "u0"}) + "\n")
    (shards / "b.jsonl").write_text(json.dumps({"body": prose(1), "url": "u1"}) + "\n")
    rows, _ = clean(tmp_path, f"{shards}/*.jsonl*", tiny_context, "glob", text_field="body")
    assert [(r["url"], r["body"][:10]) for r in rows] == [("u0", PROSE[:10]), ("u1", PROSE[:10])]  # fields kept

    (tmp_path / "list.json").write_text(json.dumps([{"text": prose(2), "id": 7}]))
    rows, _ = clean(tmp_path, tmp_path / "list.json", tiny_context, "json")
    assert rows[0]["id"] == 7
    pq.write_table(pa.table({"text": [prose(3), prose(4)], "score": [0.5, 0.9]}), tmp_path / "p.parquet")
    rows, _ = clean(tmp_path, tmp_path / "p.parquet", tiny_context, "parquet")
    assert [r["score"] for r in rows] == [0.5, 0.9]
    Dataset.from_dict({"text": [prose(5)], "lang": ["en"]}).save_to_disk(str(tmp_path / "saved"))
    rows, _ = clean(tmp_path, tmp_path / "saved", tiny_context, "saved_out")
    assert rows == [{"text": prose(5), "lang": "en"}]


def test_bad_input_is_skipped_and_reported_or_fails_with_file_and_line(tmp_path, tiny_context):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join([
        json.dumps({"text": prose(0)}).encode(),
        b'{"text": "unterminated',
        json.dumps({"title": "no text field"}).encode(),
        b'{"text": "caf\xe9 latin-1"}',
        json.dumps({"text": 42}).encode(),
        json.dumps({"text": prose(1)}).encode(),
    ]) + b"\n")
    rows, report = clean(tmp_path, bad, tiny_context, "skip")
    assert len(rows) == 2 and report["bad_records"] == 4
    _, manifest = lmforge.run_stage(StandardCleaner(workers=1, steps=["normalize"]), {"text": str(bad)},
                                    tmp_path / "staged", tiny_context)
    assert manifest["metrics"]["bad_records"] == 4  # in the console's summary line, not only in report.json
    lines = report["bad_record_lines"]
    assert lines[0].startswith(f"{bad}:2: invalid JSON line") and f"{bad}:3: no 'text' field" in lines[1]
    assert lines[2].startswith(f"{bad}:4: invalid UTF-8") and "expected a string" in lines[3]
    with pytest.raises(DataError, match=rf"{bad}:2: invalid JSON line"):
        clean(tmp_path, bad, tiny_context, "fail", on_bad_input="fail")
    assert not list((tmp_path / "fail").iterdir())  # nothing half-written
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no documents in the input"):
        clean(tmp_path, empty, tiny_context, "empty")


@pytest.fixture(scope="module")
def sample_subset(tmp_path_factory):
    """The first 120 bundled documents plus lightly edited copies of 30 (near-duplicates)."""
    with open(lmforge.sample_data_path("raw_text.jsonl")) as handle:
        records = [json.loads(line) for line in handle][:120]
    records += [{"text": r["text"].replace(" the ", " a ", 1)} for r in records[:30]]
    path = tmp_path_factory.mktemp("subset") / "subset.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_report_counts_add_up_and_workers_do_not_change_the_output(tmp_path, tiny_context, sample_subset):
    source = sample_subset
    steps = ["normalize", "gopher_repetition", "gopher_quality", {"name": "c4_quality",
             "filter_no_terminal_punct": False}, "fineweb_quality", "exact_dedup", "minhash_dedup", "pii"]
    one, report = clean(tmp_path, source, tiny_context, "w1", steps=steps, workers=1, batch_size=16)
    two, report_two = clean(tmp_path, source, tiny_context, "w2", steps=steps, workers=2, batch_size=16,
                            shard_docs=50)
    assert one == two  # same records, same order, whatever the number of processes and shards
    assert report["removed"] == report_two["removed"]
    assert len(list((tmp_path / "w2").glob("data-*.parquet"))) > 1
    per_step = report["per_step"]
    assert per_step[0]["docs_in"] == report["docs_in"] and per_step[-1]["docs_out"] == report["docs_out"]
    for before, after in pairwise(per_step):
        assert after["docs_in"] == before["docs_out"] and after["chars_in"] == before["chars_out"]
    assert sum(report["removed"].values()) == report["docs_in"] - report["docs_out"]
    assert all(0 < len(v) <= 3 for v in report["examples"].values())
    assert report["removed"].get("minhash_dedup:near_duplicate", 0) + report["removed"].get(
        "exact_dedup:duplicate", 0) >= 10  # the edited copies of kept documents
    assert set(report["examples"]) == set(report["removed"])


BOILERPLATE = ["Home | About Us | Shop | Contact", "Shop » Garden » Tools",
               "This website uses cookies to ensure you get the best experience on our website.",
               "Please enable JavaScript in your browser to view this page.",
               "Read our Privacy Policy and Terms of Use before you continue."]


def test_standard_cleaner_strips_boilerplate_and_keeps_prose(tmp_path, tiny_context, real_data):
    """Real C4 pages with the page furniture put back (C4 had already removed it): menus, cookie banner,
    script notice and policy line go; the article text stays."""
    with gzip.open(real_data / "c4_demo.jsonl.gz", "rt", encoding="utf-8") as handle:
        raw = [json.loads(line)["text"] for line in handle]
    pages = tmp_path / "pages.jsonl"
    with open(pages, "w") as handle:
        for text in raw:
            page = "\n".join(BOILERPLATE[:2] + [text] + BOILERPLATE[2:])
            handle.write(json.dumps({"text": page}) + "\n")
    rows, report = clean(tmp_path, pages, tiny_context, "c4", steps=StandardCleaner.config_class().steps)
    texts = [r["text"] for r in rows]
    assert 0.5 * report["docs_in"] < len(texts) < report["docs_in"]
    kept_lines = {line for t in texts for line in t.splitlines()}
    assert not kept_lines & set(BOILERPLATE)
    assert not any("javascript" in line.lower() for line in kept_lines)
    assert all(r["language"] == "en" for r in rows)
    prose_lines = {line for t in raw for line in t.splitlines() if len(line.split()) > 20 and line[-1] in ".!?"}
    assert len(kept_lines & prose_lines) > 0.6 * len(prose_lines)  # long sentences of article prose stay

    # wiki_demo.txt holds each article on ONE line, ending in its category names ("…Far-left politics"):
    # FineWeb's line rules (and datatrove's) drop every such one-line doc, so they are left out here
    steps = [s for s in StandardCleaner.config_class().steps if s != "fineweb_quality"]
    _, wiki_report = clean(tmp_path, real_data / "wiki_demo.txt.gz", tiny_context, "wiki", txt_mode="line",
                           steps=steps)
    assert wiki_report["docs_out"] >= 0.7 * wiki_report["docs_in"]  # encyclopaedic prose is kept


def test_basic_cleaner_accepts_the_new_steps(tmp_path, tiny_context, sample_subset):
    out = tmp_path / "basic"
    out.mkdir()
    BasicCleaner(steps=["normalize", "gopher_quality", "language", "minhash_dedup", "pii"]).run(
        {"text": str(sample_subset)}, out, tiny_context)
    report = json.loads((out / "report.json").read_text())
    assert report["docs_out"] > 0 and any(k.startswith("gopher_quality:") for k in report["removed"])


def test_standard_option_composes_from_hydra():
    cfg = lmforge.compose(["cleaner=standard", "cleaner.workers=1"])
    cleaner = lmforge.stage("cleaner", cfg)
    assert isinstance(cleaner, StandardCleaner) and cleaner.config.workers == 1
    assert [s if isinstance(s, str) else s["name"] for s in cleaner.config.steps][-1] == "pii"


def test_auto_workers_use_every_core_only_for_large_inputs(tmp_path):
    import os

    from lmforge.plugins.cleaners.standard import AUTO_POOL_BYTES, auto_workers

    small = tmp_path / "small.jsonl"
    small.write_text('{"text": "a"}\n')
    large = tmp_path / "large.jsonl"
    with open(large, "wb") as handle:
        handle.truncate(AUTO_POOL_BYTES + 1)  # sparse: only its size matters here
    assert auto_workers(str(small)) == 1  # the bundled data and tests clean in this process: no fork
    assert auto_workers(str(large)) == (os.cpu_count() or 1)
