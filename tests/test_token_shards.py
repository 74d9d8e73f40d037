"""Token shards: all cores tokenise the corpus into memory-mapped shards that read back as the very token
stream the single-array path produced; a killed build resumes and ends byte-identical."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmforge
import numpy as np
import pytest
from lmforge.plugins.pretrainers import corpus as pretrain_corpus
from lmforge.plugins.pretrainers import token_shards
from lmforge.plugins.pretrainers import windows as pretrain_windows


def reference_tokens(path: Path, tokenizer, text_field: str = "text") -> np.ndarray:
    """The pre-shard path, kept here as the reference: whole documents through the transformers tokenizer
    in line-aligned pieces, eos between documents, one array in memory."""
    from lmforge.plugins.lib.data import iter_texts

    out, n_docs = [], 0
    for batch in iter_texts(path, text_field):
        for text in batch:
            if n_docs:
                out.append(tokenizer.eos_token_id)
            pieces = token_shards.cut_pieces(text)
            if pieces:
                for ids in tokenizer(pieces, add_special_tokens=False, split_special_tokens=True)["input_ids"]:
                    out.extend(ids)
            n_docs += 1
    return np.asarray(out, dtype=np.int64)


@pytest.fixture(scope="module")
def bpe(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture(scope="module")
def book(tmp_path_factory, tiny_shakespeare) -> Path:
    """One long document with a line longer than a piece (cut mid-line) and text that looks like a special token."""
    text = tiny_shakespeare.read_text()[:300_000]
    path = tmp_path_factory.mktemp("shards") / "book.txt"
    path.write_text(text[:100_000] + "x" * 70_000 + "<|eos|> typed by a user\n" + text[100_000:])
    return path


@pytest.fixture(scope="module")
def documents(tmp_path_factory, real_data) -> Path:
    """Many real web documents of varied length, one of them empty."""
    with gzip.open(real_data / "c4_demo.jsonl.gz", "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    records.insert(5, {"text": ""})
    path = tmp_path_factory.mktemp("shards") / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": r["text"]}) for r in records) + "\n")
    return path


def shard_files(entry: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(entry.iterdir())}


@pytest.mark.parametrize("source", ["book", "documents"])
def test_shards_read_back_as_the_single_array_stream(source, request, bpe, tmp_path, monkeypatch):
    path = request.getfixturevalue(source)
    # small blocks and shards, so piece cuts straddle read blocks and documents straddle shards
    monkeypatch.setattr(token_shards, "iter_pieces", lambda p, f, _orig=token_shards.iter_pieces:
                        _orig(p, f, block_chars=50_000))
    index = token_shards.build_shards(path, bpe, "text", tmp_path / "two", workers=2, shard_chars=40_000)
    stream, read_index = token_shards.TokenStream.open(tmp_path / "two")
    expected = reference_tokens(path, bpe)
    assert len(index["shards"]) > 3 and read_index == index
    assert np.array_equal(np.asarray(stream, dtype=np.int64), expected)
    assert index["tokens"] == len(expected)
    if source == "book":
        assert index["bytes"] == len(path.read_bytes()) and index["documents"] == 1
    # one worker in this process writes the very same bytes
    token_shards.build_shards(path, bpe, "text", tmp_path / "one", workers=1, shard_chars=40_000)
    assert shard_files(tmp_path / "one") == shard_files(tmp_path / "two")
    # windows across shard boundaries read what windows over one array read
    windows = pretrain_windows.Windows(stream[: len(stream) - 100], block_size=64, stride=7)
    flat = pretrain_windows.Windows(expected[: len(expected) - 100], block_size=64, stride=7)
    picks = np.random.default_rng(0).integers(0, len(flat), 200)
    assert len(windows) == len(flat) and (windows.batch(picks) == flat.batch(picks)).all()


def test_document_counts_and_bytes(documents, bpe, tmp_path):
    texts = [json.loads(line)["text"] for line in documents.read_text().splitlines()]
    index = token_shards.build_shards(documents, bpe, "text", tmp_path / "e", workers=1, shard_chars=30_000)
    assert index["documents"] == len(texts)
    assert index["bytes"] == sum(len(t.encode()) for t in texts)
    eos = np.asarray(token_shards.TokenStream.open(tmp_path / "e")[0]) == bpe.eos_token_id
    assert eos.sum() == len(texts) - 1  # one between each pair of documents, none typed in the text


KILL_CHILD = """
import sys
from pathlib import Path
from transformers import AutoTokenizer
from lmforge.plugins.pretrainers import token_shards
path, tok, entry = sys.argv[1:4]
token_shards.build_shards(Path(path), AutoTokenizer.from_pretrained(tok), "text", Path(entry), workers=2,
                          shard_chars=20_000)
"""


def test_killed_build_resumes_byte_identical(tiny_shakespeare, tiny_tokenizer_dir, bpe, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_shakespeare.read_text() * 2)
    entry = tmp_path / "killed"
    partial = entry.with_name("killed.partial")
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(corpus), str(tiny_tokenizer_dir), str(entry)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(list(partial.glob("shard_*.json"))) < 4:
            assert child.poll() is None, "the build ended before the kill"
            assert time.time() < deadline, "no shard finished"
            time.sleep(0.02)
        os.killpg(child.pid, signal.SIGKILL)  # the build and its worker processes, mid-write
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert not (entry / "index.json").exists()
    finished = sorted(partial.glob("shard_*.json"))
    assert 4 <= len(finished) < 110  # 2.2M characters / 20k per shard: most were still to do
    kept = {p.stem: p.with_suffix(".bin").stat().st_mtime_ns for p in finished}

    index = token_shards.build_shards(corpus, bpe, "text", entry, workers=2, shard_chars=20_000)
    token_shards.build_shards(corpus, bpe, "text", tmp_path / "straight", workers=2, shard_chars=20_000)
    assert shard_files(entry) == shard_files(tmp_path / "straight")
    assert not partial.exists() and index["tokens"] == sum(s["tokens"] for s in index["shards"])
    assert all((entry / f"{stem}.bin").stat().st_mtime_ns == stamp for stem, stamp in kept.items())  # not redone


def test_pretraining_cache_uses_shards_and_every_worker_count_agrees(book, bpe, tiny_tokenizer_dir, tmp_path):
    one, meta_one = pretrain_corpus.tokenized_corpus(book, tiny_tokenizer_dir, bpe, "text", str(tmp_path / "a"), workers=1)
    two, meta_two = pretrain_corpus.tokenized_corpus(book, tiny_tokenizer_dir, bpe, "text", str(tmp_path / "b"), workers=2)
    assert meta_one == meta_two and isinstance(two, token_shards.TokenStream)
    assert np.array_equal(np.asarray(one), np.asarray(two))
    index = json.loads((tmp_path / "b" / meta_two["key"] / "index.json").read_text())
    assert index["format"] == token_shards.FORMAT and index["dtype"] == "uint16"
    first = np.memmap(tmp_path / "b" / meta_two["key"] / index["shards"][0]["file"], dtype=index["dtype"], mode="r")
    assert np.array_equal(first[:50], np.asarray(two[:50]))  # the documented layout: a flat array, no header


def test_no_documents_is_a_clear_error_and_leaves_nothing(bpe, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(lmforge.LmforgeError, match="no records|no documents"):
        token_shards.build_shards(empty, bpe, "text", tmp_path / "cache" / "k", workers=1)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["k.lock"]


def test_shard_size_follows_the_corpus_size_not_the_core_count(tmp_path):
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    with open(small, "wb") as handle:  # sparse files: the size on disk is what counts, not the bytes written
        handle.truncate(40 << 20)
    with open(large, "wb") as handle:
        handle.truncate(400 << 20)
    assert token_shards.shard_size_for(small) == (40 << 20) // token_shards.SHARDS_AT_LEAST  # 16 shards, not 5
    assert token_shards.shard_size_for(large) == token_shards.SHARD_CHARS
    assert token_shards.shard_size_for(tmp_path / "tiny.txt") == token_shards.SHARD_CHARS  # not there: a Hub id
    (tmp_path / "tiny.txt").write_text("a few words")
    assert token_shards.shard_size_for(tmp_path / "tiny.txt") == token_shards.MIN_SHARD_CHARS
    assert token_shards.shard_size_for(tmp_path) >= token_shards.MIN_SHARD_CHARS  # a folder: its files' sizes
