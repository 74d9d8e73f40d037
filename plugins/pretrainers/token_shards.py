"""Token shards: a corpus tokenised once, by all cores, into memory-mappable files; read as one stream.

Why: a pretraining corpus is far larger than memory. Tokenising it in one process into a Python list
and concatenating at the end (what a megabyte-sized corpus gets away with) takes hours per billion
tokens and RAM that grows with the corpus. Here the corpus is cut into shards of about
``shard_chars`` characters of text; a pool of worker processes (one per core) tokenises the shards
side by side, each straight into its own file, so memory stays flat whatever the corpus size, a killed
run redoes only the shards it had not finished, and every later run (and every rank of a distributed
run) memory-maps the result instead of tokenising again.

On-disk format (``lmforge-token-shards/1``), one directory per cache key::

    <key>/index.json          {"format", "dtype", "eos_token_id", "tokens", "bytes", "documents",
                               "key", "shard_chars", "shards": [{"file", "tokens", "bytes", "documents"}]}
    <key>/shard_000000.bin    the shard's tokens: a flat little-endian uint16 (vocab < 65,536) or
    <key>/shard_000001.bin    uint32 array, no header (``np.memmap(file, dtype)`` reads it), as
    …                         nanoGPT's train.bin and datatrove's ``.ds`` files are

Concatenated in order, the shards are the corpus's token stream: the documents' tokens with one eos
token *between* documents (before every document but the first). A long document (a whole book) is
encoded in line-aligned pieces of at most 65,536 characters, so the stream does not depend on how the
corpus is cut into shards.

While being built the directory is ``<key>.partial/``: each finished shard is ``shard_N.bin`` (written
as ``.tmp`` then renamed) plus ``shard_N.json`` (its counts, written last); a restarted build keeps
those and tokenises the rest, and the files come out byte-identical to an uninterrupted build. Once
``index.json`` is written the directory is renamed to ``<key>/``. A file lock keeps two processes from
building the same key at once.

On a cluster the same step belongs to an existing engine rather than a scheduler of our own:
datatrove's ``DocumentTokenizer`` (local, Slurm and Ray executors) writes ``.ds`` token files of the
same flat layout; :class:`TokenStream` reads such files too (``TokenStream.from_files``).
"""

from __future__ import annotations

import codecs
import gzip
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

FORMAT = "lmforge-token-shards/1"
SHARD_CHARS = 1 << 23  # ~8M characters of text per shard: ~2-8M tokens, a few seconds of one core
MIN_SHARD_CHARS = 1 << 20  # a smaller corpus gets smaller shards (shard_size_for), never below ~1M characters
SHARDS_AT_LEAST = 16  # ... so that it still makes this many shards and no core waits idle at the end
PIECE_CHARS = 1 << 16  # a long document is encoded in line-aligned pieces of at most this many characters
ENCODE_BATCH = 16  # pieces per tokenizer call inside a worker (~1 MB of text: memory stays small)


def shard_size_for(text_path: Any) -> int:
    """Characters per shard for an input: SHARD_CHARS, or less for a local corpus under ~128 MB, so it is cut
    into at least SHARDS_AT_LEAST shards. With 8M-character shards a 50 MB corpus made 6 shards, and a 2-core
    pool spent its last round with one core idle (1.65x instead of ~1.9x over one worker). A pure function
    of the input's size on disk (never of the core count), so a resumed build plans the same shards."""
    path = Path(text_path) if isinstance(text_path, (str, os.PathLike)) else None
    if path is None or not path.exists():
        return SHARD_CHARS  # a glob, mixture or Hub dataset: size unknown up front
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return int(min(SHARD_CHARS, max(MIN_SHARD_CHARS, size // SHARDS_AT_LEAST)))


def default_workers() -> int:
    """The cores this process may use (its CPU affinity), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- reading the corpus as pieces

def cut_pieces(text: str, piece_chars: int = PIECE_CHARS) -> list[str]:
    """Line-aligned pieces of at most ``piece_chars`` characters (a line longer than that is cut)."""
    pieces, start = [], 0
    while start < len(text):
        end = len(text) if len(text) - start <= piece_chars else text.rfind("\n", start, start + piece_chars) + 1
        if end <= start:
            end = start + piece_chars
        pieces.append(text[start:end])
        start = end
    return pieces


def iter_pieces(text: Any, text_field: str, piece_chars: int = PIECE_CHARS,
                block_chars: int = 1 << 22) -> Iterator[tuple[str, bool]]:
    """``(piece, starts_a_document)`` over a data input, streamed: a plain-text file (one document) is read in
    blocks, so even a many-gigabyte .txt never sits in memory whole; any other input (JSON lines, parquet, a
    folder, glob, mixture or Hub dataset) comes document by document from ``lmforge.plugins.lib.data``."""
    from lmforge.sources import TEXT_SUFFIXES, suffix_of

    if isinstance(text, (str, os.PathLike)) and Path(text).is_file() and suffix_of(text) in TEXT_SUFFIXES:
        yield from _text_file_pieces(Path(text), piece_chars, block_chars)
        return
    from lmforge.plugins.lib.data import iter_texts

    for batch in iter_texts(text, text_field):
        for document in batch:
            pieces = cut_pieces(document, piece_chars)
            if not pieces:
                yield "", True
            for index, piece in enumerate(pieces):
                yield piece, index == 0


def _text_file_pieces(path: Path, piece_chars: int, block_chars: int) -> Iterator[tuple[str, bool]]:
    """The pieces of one text file (gzipped or not) read block by block; bad UTF-8 names its file:line."""
    from lmforge.errors import DataError

    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    buffer, first, at_end, lines = "", True, False, 0
    with (gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")) as handle:
        while True:
            while not at_end and len(buffer) <= piece_chars:
                block = handle.read(block_chars)
                at_end = not block
                try:
                    buffer += decoder.decode(block, final=at_end)
                except UnicodeDecodeError as exc:
                    line = lines + buffer.count("\n") + block[:exc.start].count(b"\n") + 1
                    raise DataError(f"{path}:{line}: invalid UTF-8") from None
            if not buffer:
                if first:
                    yield "", True  # an empty file is one empty document
                return
            if at_end:
                pieces, buffer = cut_pieces(buffer, piece_chars), ""
            else:  # every piece but the last was cut with a full piece of lookahead, as in one string;
                pieces = cut_pieces(buffer, piece_chars)  # the last is re-cut once more text is read
                buffer = pieces.pop()
            for piece in pieces:
                lines += piece.count("\n")
                yield piece, first
                first = False


def plan_shards(pieces: Iterator[tuple[str, bool]], shard_chars: int) -> Iterator[tuple[int, list[str], list[bool]]]:
    """Group consecutive pieces into shards of about ``shard_chars`` characters: ``(index, pieces, starts)``."""
    index, batch, starts, size = 0, [], [], 0
    for piece, start in pieces:
        batch.append(piece)
        starts.append(start)
        size += len(piece)
        if size >= shard_chars:
            yield index, batch, starts
            index, batch, starts, size = index + 1, [], [], 0
    if batch:
        yield index, batch, starts


# ---------------------------------------------------------------- tokenising one shard (in a worker)

_WORKER: dict = {}


def _init_worker(backend_json: str, eos: int, dtype: str) -> None:
    """Per-process state: the tokenizer's Rust backend (exactly the one transformers calls), eos and dtype."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already; no nested thread pools
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(backend_json)
    backend.no_truncation()
    backend.no_padding()
    backend.encode_special_tokens = True  # text that looks like "<|eos|>" stays text (split_special_tokens)
    _WORKER.update(backend=backend, eos=eos, dtype=dtype)


def _shard_name(index: int) -> str:
    return f"shard_{index:06d}"


def _tokenize_shard(task: tuple[int, list[str], list[bool], str]) -> dict:
    """Tokenise one shard into ``<dir>/shard_N.bin`` (tmp then rename) and ``shard_N.json``; return its counts."""
    import numpy as np

    index, pieces, starts, directory = task
    backend, eos, dtype = _WORKER["backend"], _WORKER["eos"], np.dtype(_WORKER["dtype"])
    name = _shard_name(index)
    directory = Path(directory)
    tmp = directory / f"{name}.bin.tmp"
    n_tokens, n_bytes, n_docs = 0, 0, 0
    eos_array = np.array([eos], dtype=dtype)
    with open(tmp, "wb") as out:
        for first in range(0, len(pieces), ENCODE_BATCH):
            chunk = pieces[first:first + ENCODE_BATCH]
            encoded = backend.encode_batch_fast(chunk, add_special_tokens=False)
            for offset, (piece, encoding) in enumerate(zip(chunk, encoded)):
                if starts[first + offset]:
                    n_docs += 1
                    if index or first + offset:  # eos between documents: before every one but the corpus's first
                        out.write(eos_array.tobytes())
                        n_tokens += 1
                ids = np.asarray(encoding.ids, dtype=dtype)
                out.write(ids.tobytes())
                n_tokens += ids.size
                n_bytes += len(piece.encode("utf-8"))
    os.replace(tmp, directory / f"{name}.bin")
    info = {"file": f"{name}.bin", "tokens": n_tokens, "bytes": n_bytes, "documents": n_docs}
    _write_json(directory / f"{name}.json", info)
    return info


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _finished(directory: Path, index: int, itemsize: int) -> dict | None:
    """The counts of shard ``index`` if both its files are whole, else None (it is redone)."""
    meta, data = directory / f"{_shard_name(index)}.json", directory / f"{_shard_name(index)}.bin"
    try:
        info = json.loads(meta.read_text())
        return info if data.stat().st_size == info["tokens"] * itemsize else None
    except (OSError, ValueError, KeyError):
        return None


# ---------------------------------------------------------------- building a cache entry

def build_shards(text_path: Any, tokenizer, text_field: str, entry: Path, *, workers: int | None = None,
                 shard_chars: int | None = None, quiet: bool = True, key: str = "") -> dict:
    """Tokenise ``text_path`` into the shard directory ``entry`` (resuming ``entry.partial``); its index.

    ``workers`` processes tokenise shards side by side (None = every core; 1 = in this process). At
    most ``workers + 1`` shards of text are in flight, so memory does not grow with the corpus.
    ``shard_chars`` None: ``shard_size_for(text_path)``.
    """
    import numpy as np
    from filelock import FileLock
    from lmforge.errors import DataError

    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else max(1, int(workers))
    shard_chars = shard_size_for(text_path) if shard_chars is None else int(shard_chars)
    with FileLock(str(entry.with_name(entry.name + ".lock"))):
        if (entry / "index.json").is_file():  # another process built it while we waited for the lock
            return json.loads((entry / "index.json").read_text())
        backend = tokenizer.backend_tokenizer  # a transformers "fast" tokenizer (all lmforge tokenizers are)
        dtype = np.dtype(np.uint16 if len(tokenizer) < 2 ** 16 else np.uint32)
        eos = tokenizer.eos_token_id
        if eos is None:
            raise DataError("tokenizer: no eos token; pretraining joins documents with eos")
        layout = {"format": FORMAT, "dtype": dtype.name, "eos_token_id": int(eos), "shard_chars": shard_chars,
                  "piece_chars": PIECE_CHARS, "key": key}
        partial = entry.with_name(entry.name + ".partial")
        layout_file = partial / "layout.json"
        if partial.exists() and (not layout_file.is_file() or json.loads(layout_file.read_text()) != layout):
            shutil.rmtree(partial)  # left by a build with another layout: start afresh
        partial.mkdir(parents=True, exist_ok=True)
        _write_json(layout_file, layout)

        initargs = (backend.to_str(), int(eos), dtype.name)
        try:
            shards = _run_pool(plan_shards(iter_pieces(text_path, text_field), shard_chars), partial, workers,
                               initargs, dtype.itemsize, text_path, quiet)
        except Exception:  # bad input: nothing half-written stays (a kill or Ctrl-C keeps finished shards)
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if not shards or not sum(s["documents"] for s in shards):
            shutil.rmtree(partial, ignore_errors=True)
            raise DataError(f"{text_path}: no documents in field '{text_field}'")
        index = {**layout, "tokens": sum(s["tokens"] for s in shards), "bytes": sum(s["bytes"] for s in shards),
                 "documents": sum(s["documents"] for s in shards), "shards": shards}
        _write_json(partial / "index.json", index)
        for leftover in partial.glob("shard_*.json"):
            leftover.unlink()
        (partial / "layout.json").unlink()
        os.replace(partial, entry)
        return index


def _run_pool(tasks, partial: Path, workers: int, initargs: tuple, itemsize: int, text_path: Path,
              quiet: bool) -> list[dict]:
    """Run the shard tasks not yet finished, ``workers`` at a time, with a bounded number in flight."""
    from tqdm.auto import tqdm

    size = Path(text_path).stat().st_size if isinstance(text_path, (str, os.PathLike)) and Path(text_path).is_file() \
        else None
    bar = tqdm(total=size, desc="tokenising", unit="B", unit_scale=True, disable=quiet)
    results: dict[int, dict] = {}

    def done(info: dict, index: int) -> None:
        results[index] = info
        bar.update(info["bytes"])

    if workers == 1:
        saved = dict(_WORKER)
        _init_worker(*initargs)
        try:
            for index, pieces, starts in tasks:
                info = _finished(partial, index, itemsize) or _tokenize_shard((index, pieces, starts, str(partial)))
                done(info, index)
        finally:
            _WORKER.clear()
            _WORKER.update(saved)
    else:
        # fork where there is one (Linux), as datasets.map(num_proc) does: a spawned worker would re-run the
        # user's script when it lacks an `if __name__ == "__main__"` guard (lmforge.run from a script under
        # accelerate launch). The workers touch only the tokenizer built afresh here, never torch or CUDA.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        saved_env = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # no "forked after parallelism" warning per worker
        try:
            _pool_map(tasks, partial, workers, initargs, itemsize, method, done)
        finally:
            if saved_env is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = saved_env
    bar.close()
    return [results[i] for i in sorted(results)]


def _pool_map(tasks, partial: Path, workers: int, initargs: tuple, itemsize: int, method: str, done) -> None:
    """Unfinished shards to a process pool; at most ``workers + 1`` shards of text in flight at once."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                             initializer=_init_worker, initargs=initargs) as pool:
        pending = {}
        for index, pieces, starts in tasks:
            finished = _finished(partial, index, itemsize)
            if finished is not None:
                done(finished, index)
                continue
            while len(pending) > workers:
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in ready:
                    done(future.result(), pending.pop(future))
            pending[pool.submit(_tokenize_shard, (index, pieces, starts, str(partial)))] = index
        for future, index in list(pending.items()):
            done(future.result(), index)


# ---------------------------------------------------------------- reading: one stream over memory-mapped shards

class TokenStream:
    """The concatenation of memory-mapped token files, indexed like one 1-D array (slices and int arrays).

    Slicing returns another stream (no copy); indexing with an integer array gathers from the shards
    (each rank touches only the pages its own windows lie in). ``np.asarray(stream)`` materialises it.
    """

    def __init__(self, arrays, start: int = 0, stop: int | None = None):
        import numpy as np

        self.arrays = list(arrays)
        self.offsets = np.concatenate([[0], np.cumsum([len(a) for a in self.arrays])]).astype(np.int64)
        total = int(self.offsets[-1])
        self.start = start
        self.stop = total if stop is None else stop
        self.dtype = self.arrays[0].dtype if self.arrays else np.dtype(np.uint16)

    @classmethod
    def from_files(cls, files, dtype) -> TokenStream:
        """Flat token files in order (lmforge shards, nanoGPT .bin, datatrove .ds), memory-mapped read-only."""
        import numpy as np

        arrays = [np.memmap(f, dtype=dtype, mode="r") if Path(f).stat().st_size else np.zeros(0, dtype=dtype)
                  for f in files]
        return cls(arrays)

    @classmethod
    def open(cls, entry: Path) -> tuple[TokenStream, dict]:
        """The stream and index of a shard directory written by :func:`build_shards`."""
        entry = Path(entry)
        index = json.loads((entry / "index.json").read_text())
        if index.get("format") != FORMAT:
            from lmforge.errors import DataError

            raise DataError(f"{entry / 'index.json'}: format {index.get('format')!r}, expected {FORMAT!r}")
        return cls.from_files([entry / s["file"] for s in index["shards"]], index["dtype"]), index

    def __len__(self) -> int:
        return self.stop - self.start

    def __array__(self, dtype=None, copy=None):
        import numpy as np

        out = self[np.arange(len(self), dtype=np.int64)] if len(self) else np.zeros(0, dtype=self.dtype)
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, key):
        import numpy as np

        if isinstance(key, slice):
            first, last, step = key.indices(len(self))
            if step != 1:
                raise IndexError("TokenStream slices take no step")
            return TokenStream._view(self, self.start + first, self.start + max(first, last))
        if isinstance(key, (int, np.integer)):
            if not -len(self) <= key < len(self):
                raise IndexError(f"index {key} out of range for {len(self)} tokens")
            return self[np.asarray([key % len(self)])][0]
        positions = np.asarray(key, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError("token position out of range")
        flat = positions.reshape(-1) + self.start
        which = np.searchsorted(self.offsets, flat, side="right") - 1
        out = np.empty(flat.shape, dtype=self.dtype)
        for shard in np.unique(which):
            mask = which == shard
            out[mask] = self.arrays[shard][flat[mask] - self.offsets[shard]]
        return out.reshape(positions.shape)

    @staticmethod
    def _view(stream: TokenStream, start: int, stop: int) -> TokenStream:
        view = object.__new__(TokenStream)
        view.arrays, view.offsets, view.dtype = stream.arrays, stream.offsets, stream.dtype
        view.start, view.stop = start, stop
        return view
