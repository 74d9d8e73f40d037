"""Token shards made elsewhere as the pretrainer's text input: a corpus tokenised on other machines.

The pretrainer's ``text`` input may be a directory of token shards instead of text. Two formats, told apart by
what the directory holds (:func:`lmforge.sources.token_shard_kind`; both at once, or shards beside text files,
is one error):

- **lmforge** (``lmforge-token-shards/1``, see ``token_shards.py``): ``index.json`` + ``shard_NNNNNN.bin``, the
  token cache a run writes (copied from another machine) or :func:`~.token_shards.build_shards` run there.
- **datatrove** (its ``DocumentTokenizer`` on a local, Slurm or Ray executor): ``<name>.ds`` flat little-endian
  uint16/uint32 token arrays, each with ``<name>.ds.index`` (uint64 document ends) and ``<name>.ds.metadata``
  (``<tokenizer>|<token size>``, the token count, the count in words) beside it. Every ``.ds`` file in the
  directory or below is read, in the order of their paths (sorted), so every rank of every machine reads the
  same stream. Documents are joined as datatrove wrote them: with ``eos_token=`` each one ends with eos.
  Loss masks (``.ds.loss``) are not read.

Nothing is tokenised again: the files are memory-mapped as one :class:`~.token_shards.TokenStream`. Before any
training the directory is checked, each failure one line naming the file: a file's size against its index and
metadata (a truncated copy, or a metadata token size that is not the file's), one token size across files, the
eos of lmforge shards against the tokenizer's, and the largest token id against the tokenizer's vocabulary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lmforge.errors import DataError
from lmforge.plugins.pretrainers.shard_build import input_files
from lmforge.plugins.pretrainers.token_shards import FORMAT, TokenStream
from lmforge.sources import DATATROVE_TOKENS, DataSource, token_shard_kind

VOCAB_SCAN_CHUNK = 1 << 24  # tokens read at a time when looking for the largest id (32-64 MB)
SAMPLE_TOKENS = 250_000  # tokens decoded for a text sample (the language map's word counts)
_MAX_IDS: dict[tuple, int] = {}  # (dir, files' sizes and mtimes) -> largest id: one scan per process


def shard_dir(text) -> Path | None:
    """The directory of token shards a pretrainer ``text`` input names, or None when it is text."""
    if isinstance(text, DataSource):
        tokens = [part for part in text.parts if part.kind == "tokens"]
        if tokens and len(text.parts) > 1:
            raise DataError(f"{text}: a directory of token shards in a mixture; give one directory of shards alone")
        return tokens[0].files[0] if tokens else None
    if isinstance(text, (str, os.PathLike)) and token_shard_kind(Path(text)):
        return Path(text)
    return None


def open_shards(directory: Path, tokenizer) -> tuple:
    """``(TokenStream, meta)`` of a token-shard directory, checked against ``tokenizer`` (see the module
    docstring); ``meta``: ``tokens``, ``documents`` (None when unknown), ``bytes`` (None: datatrove keeps no
    byte count), ``format``."""
    directory = Path(directory)
    kind = token_shard_kind(directory)
    if kind == "lmforge":
        stream, meta = _lmforge_shards(directory, tokenizer)
    else:
        stream, meta = _datatrove_shards(directory, len(tokenizer))
    if not len(stream):
        raise DataError(f"{directory}: the token shards hold no tokens")
    check_vocab(directory, stream, len(tokenizer), meta.get("tokenizer"))
    return stream, meta


def check_shard_input(stage, inputs: dict) -> None:
    """A pretrainer's ``check_data``: a directory of token shards is opened and checked against the tokenizer
    before any stage of the pipeline runs (when the tokenizer exists already: not a ``stage:`` reference);
    with ``tokenize_executor``, a text input must be files datatrove's readers take."""
    directory = shard_dir(inputs.get("text"))
    if directory is None and inputs.get("text") is not None and stage.config.tokenize_executor != "in_process":
        input_files(inputs["text"])  # datatrove's readers must read it (checked here, before any stage runs)
    if directory is None or inputs.get("tokenizer") is None:
        return
    from lmforge.plugins.lib.models import load_tokenizer, model_path

    open_shards(directory, load_tokenizer(model_path(inputs["tokenizer"])))


def check_vocab(directory: Path, stream, vocab_size: int, made_with: str | None = None) -> None:
    """One line when a token id of the stream is outside ``0 .. vocab_size - 1``."""
    top = max_token_id(directory, stream)
    if top >= vocab_size:
        origin = f" (their metadata names {made_with})" if made_with else ""
        raise DataError(f"{directory}: token ids go up to {top}, but the tokenizer has {vocab_size} tokens (ids 0-"
                        f"{vocab_size - 1}); the shards were made with another tokenizer{origin}: pass that one as "
                        "the pretrainer's tokenizer input")


def max_token_id(directory: Path, stream) -> int:
    """The largest token id of the stream's files, read in chunks (remembered per directory and file state)."""
    directory = Path(directory).resolve()
    key = (str(directory), *sorted((p.relative_to(directory).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                                   for p in directory.rglob("*") if p.is_file()))
    if key not in _MAX_IDS:
        top = -1
        for array in stream.arrays:
            for start in range(0, len(array), VOCAB_SCAN_CHUNK):
                top = max(top, int(array[start:start + VOCAB_SCAN_CHUNK].max()))
        _MAX_IDS[key] = top
    return _MAX_IDS[key]


def sample_text(directory: Path, tokenizer, max_tokens: int = SAMPLE_TOKENS) -> str:
    """The first ``max_tokens`` tokens of a shard directory, decoded (what the model was trained on)."""
    import numpy as np

    stream, _ = open_shards(directory, tokenizer)
    return tokenizer.decode(np.asarray(stream[:max_tokens]).tolist(), skip_special_tokens=True)


# ---------------------------------------------------------------- the two formats

def _lmforge_shards(directory: Path, tokenizer) -> tuple:
    import numpy as np

    index_file = directory / "index.json"
    index = json.loads(index_file.read_text())
    if index.get("format") != FORMAT:
        raise DataError(f"{index_file}: format {index.get('format')!r}, expected {FORMAT!r}")
    itemsize = np.dtype(index["dtype"]).itemsize
    for shard in index["shards"]:
        file = directory / shard["file"]
        if not file.is_file():
            raise DataError(f"{file}: missing; index.json lists it with {shard['tokens']} tokens")
        if file.stat().st_size != shard["tokens"] * itemsize:
            raise DataError(f"{file}: {file.stat().st_size} bytes, but index.json says {shard['tokens']} tokens of "
                            f"{itemsize} bytes ({shard['tokens'] * itemsize} bytes): a partial copy?")
    eos = tokenizer.eos_token_id
    if eos is not None and index.get("eos_token_id") not in (None, eos):
        raise DataError(f"{index_file}: eos_token_id {index['eos_token_id']}, but the tokenizer's eos is {eos}; the "
                        "shards were made with another tokenizer: pass that one as the pretrainer's tokenizer input")
    stream, index = TokenStream.open(directory)
    return stream, {"tokens": index["tokens"], "bytes": index.get("bytes"), "documents": index.get("documents"),
                    "format": FORMAT}


def _datatrove_shards(directory: Path, vocab_size: int) -> tuple:
    import numpy as np

    files = sorted((p for p in directory.rglob(f"*{DATATROVE_TOKENS}") if p.is_file()),
                   key=lambda p: p.relative_to(directory).as_posix())
    # datatrove's own rule when a file has no .metadata: 4-byte tokens above 65,536 ids
    default_size = 4 if vocab_size > np.iinfo(np.uint16).max + 1 else 2
    token_size, first, documents, names = None, None, 0, set()
    for file in files:
        size, named, counted = file.stat().st_size, None, None
        meta = _read_metadata(file)
        if meta is not None:
            named, file_token_size, counted = meta
            names.add(named)
        else:
            file_token_size = token_size or default_size
        if size % file_token_size:
            raise DataError(f"{file}: {size} bytes is not a whole number of {file_token_size}-byte tokens")
        tokens = size // file_token_size
        if counted is not None and counted != tokens:
            raise DataError(f"{file}: {size} bytes, but its .metadata says {counted} tokens of {file_token_size} bytes "
                            f"({counted * file_token_size} bytes): the token size or the copy is wrong")
        if token_size is not None and file_token_size != token_size:
            raise DataError(f"{file}: {file_token_size}-byte tokens, but {first.relative_to(directory)} has "
                            f"{token_size}-byte ones; one stream's shards come from one tokenizer")
        token_size, first = file_token_size, first or file
        documents = _check_index(file, tokens, documents)
    dtype = np.dtype("<u4" if token_size == 4 else "<u2")
    stream = TokenStream.from_files(files, dtype)
    return stream, {"tokens": len(stream), "bytes": None, "documents": documents, "format": "datatrove",
                    "tokenizer": ", ".join(sorted(names)) or None}


def _read_metadata(file: Path) -> tuple[str, int, int] | None:
    """``(tokenizer, token size, token count)`` from ``<file>.metadata``, or None when there is none."""
    path = file.with_name(file.name + ".metadata")
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    try:
        tokenizer, token_size = lines[0].rsplit("|", 1)
        token_size, count = int(token_size), int(lines[1])
    except (IndexError, ValueError):
        raise DataError(f"{path}: not datatrove token metadata (expected '<tokenizer>|<token size>' and a token "
                        "count on its first two lines)") from None
    if token_size not in (2, 4):
        raise DataError(f"{path}: token size {token_size}; datatrove writes 2 or 4 bytes per token")
    return tokenizer, token_size, count


def _check_index(file: Path, tokens: int, documents: int | None) -> int | None:
    """Documents so far plus this file's (from ``<file>.index``; None once a file has no index)."""
    import numpy as np

    path = file.with_name(file.name + ".index")
    if not path.is_file():
        return None
    if path.stat().st_size % 8:
        raise DataError(f"{path}: {path.stat().st_size} bytes is not a whole number of uint64 document ends")
    ends = np.fromfile(path, dtype="<u8")
    if len(ends) and int(ends[-1]) != tokens:
        raise DataError(f"{path}: documents end at token {int(ends[-1])}, but {file.name} holds {tokens} tokens")
    return None if documents is None else documents + len(ends)
