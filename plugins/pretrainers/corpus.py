"""The corpus both pretrainers train on: tokenised once into a cache, split, cut into windows.

**Token cache**: the corpus is tokenised once, by every core, into token shards (documents joined with eos
between them; format in ``token_shards.py``) under a key made of the tokenizer's files and the data's hash;
later runs, and every rank, memory-map them as one stream. Both pretrainers read it through
:func:`load_corpus`, so they train on the same data in the same order and their results compare one to one.

**On an executor** (``pretrainer.tokenize_executor=local|ray|slurm``): the cache entry is built by datatrove's
``DocumentTokenizer`` tasks instead (``shard_build.py``) and read as below.

**Token shards made elsewhere**: when the ``text`` input is a directory of token shards (lmforge's own, or
datatrove's ``DocumentTokenizer`` output), it is memory-mapped as it is, after its checks (``shard_input.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from lmforge import sources
from lmforge.errors import ConfigError
from lmforge.plugins.lib.checkpoints import split_too_short
from lmforge.plugins.lib.models import load_tokenizer, model_path
from lmforge.plugins.pretrainers.config import PretrainConfig
from lmforge.plugins.pretrainers.shard_build import build_on_executor
from lmforge.plugins.pretrainers.shard_input import open_shards, shard_dir
from lmforge.plugins.pretrainers.token_shards import TokenStream, build_shards
from lmforge.plugins.pretrainers.windows import Windows, split_tokens

CACHE_FORMAT = 2  # part of the cache key: a new shard layout never reads an older cache


def cache_root(cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("LMFORGE_CACHE_DIR")
    return Path(env) / "tokens" if env else Path.home() / ".cache" / "lmforge" / "tokens"


def tokenizer_hash(tokenizer_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        file = Path(tokenizer_dir) / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(tokenizer_dir: Path, text, text_field: str, *layout: str) -> str:
    """A token cache entry's name: the tokenizer's files, the data's content hash, the text field (and a
    layout other than lmforge's own, e.g. datatrove's)."""
    return hashlib.sha256(json.dumps([CACHE_FORMAT, *layout, tokenizer_hash(tokenizer_dir), sources.input_hash(text),
                                      text_field]).encode()).hexdigest()[:24]


def tokenized_corpus(text_path: Path, tokenizer_dir: Path, tokenizer, text_field: str, cache_dir: str | None,
                     quiet: bool = True, workers: int | None = None):
    """The corpus as one token stream (eos between documents), from the cache or tokenised now.

    Returns ``(tokens, meta)``: a :class:`~.token_shards.TokenStream` over memory-mapped token shards
    (indexed like a 1-D numpy array) and ``{"tokens", "bytes", "documents", "key"}``. The cache key covers
    the tokenizer's files, the data's content hash and the text field; a missing entry is built by
    ``workers`` processes (None = every core), resuming a build that was killed (see ``token_shards``).
    """
    key = cache_key(tokenizer_dir, text_path, text_field)
    entry = cache_root(cache_dir) / key
    if not (entry / "index.json").is_file():
        build_shards(text_path, tokenizer, text_field, entry, workers=workers, quiet=quiet, key=key)
    tokens, index = TokenStream.open(entry)
    return tokens, {"tokens": index["tokens"], "bytes": index["bytes"], "documents": index["documents"], "key": key}


def executor_corpus(cfg: PretrainConfig, text, tokenizer_dir: Path, tokenizer, quiet: bool):
    """The corpus tokenised by datatrove's DocumentTokenizer on ``pretrainer.tokenize_executor`` (shard_build.py),
    cached under its own key (its layout differs: eos after every document), then mapped like any datatrove
    shard directory."""
    key = cache_key(tokenizer_dir, text, cfg.text_field, "datatrove-DocumentTokenizer")
    entry = cache_root(cfg.cache_dir) / key
    if not entry.is_dir():
        build_on_executor(cfg, text, tokenizer_dir, tokenizer, cfg.text_field, entry, quiet)
    tokens, meta = open_shards(entry, tokenizer)
    return tokens, {**meta, "key": key}


def pretrain_tokenizer_dir(cfg: PretrainConfig, inputs: dict) -> Path:
    """The tokenizer to train with: the ``tokenizer`` input, or with ``init_from`` that model's own."""
    tokenizer_dir = model_path(inputs["tokenizer"])
    if cfg.init_from:
        own = model_path(cfg.init_from)
        if tokenizer_dir.resolve() != own.resolve():
            raise ConfigError(f"pretrainer.init_from: continued pretraining uses the model's own tokenizer, but the "
                              f"tokenizer input is {inputs['tokenizer']}; run pipeline=continue_pretrain (or pass "
                              f"the model as the tokenizer input)")
    return tokenizer_dir


@dataclass
class Corpus:
    """The token windows a run trains and validates on."""

    train: Windows
    val: Windows
    train_tokens: int
    val_tokens: int
    bytes_per_token: float | None  # None: the input's bytes are unknown (datatrove token shards)
    source: str = "text"  # text (tokenised here) or the token shards' format


def load_corpus(cfg: PretrainConfig, inputs, context, main: bool):
    """The tokenizer and the token windows, split into train and validation (nanoGPT's contiguous split)."""
    tokenizer_dir = pretrain_tokenizer_dir(cfg, inputs)
    tokenizer = load_tokenizer(tokenizer_dir)
    shards = shard_dir(inputs["text"])
    if shards is not None:  # tokenised elsewhere: mapped as it is, once its ids fit the tokenizer
        tokens, meta = open_shards(shards, tokenizer)
    elif cfg.tokenize_executor != "in_process":  # tokenised by executor tasks, once, under the cache's file lock
        tokens, meta = executor_corpus(cfg, inputs["text"], tokenizer_dir, tokenizer, context.quiet or not main)
    else:
        # the first process of each machine to take the cache's file lock tokenises (all cores); the others
        # wait on the lock (not in a collective, so no NCCL/gloo timeout however long it takes), then map it
        tokens, meta = tokenized_corpus(inputs["text"], tokenizer_dir, tokenizer, cfg.text_field,
                                        cfg.cache_dir, quiet=context.quiet or not main, workers=cfg.tokenize_workers)
    train_tokens, val_tokens = split_tokens(tokens, cfg.val_fraction)
    train = Windows(train_tokens, cfg.block_size, cfg.stride or cfg.block_size)
    if len(train) == 0:
        raise split_too_short(len(train_tokens), cfg.block_size)
    bytes_per_token = meta["bytes"] / max(meta["tokens"], 1) if meta.get("bytes") else None
    return tokenizer, Corpus(train, Windows(val_tokens, cfg.block_size, cfg.block_size), len(train_tokens),
                             len(val_tokens), bytes_per_token, meta.get("format", "text"))


def training_summary(corpus: Corpus, val_windows: int, val_loss: float | None, **run) -> dict:
    """What a pretrainer reports at the end (metrics and ``train_summary.json``): windows and tokens of each
    split, bytes per token, the ``run`` facts it passes (steps, resumed step, world size …), and from the
    validation loss, when there is one, its perplexity and bits per byte (when the corpus's bytes are known)."""
    summary = {"train_windows": len(corpus.train), "val_windows": val_windows, "train_tokens": corpus.train_tokens,
               "val_tokens": corpus.val_tokens, "corpus_tokens": corpus.train_tokens + corpus.val_tokens, **run}
    if corpus.bytes_per_token is not None:
        summary["bytes_per_token"] = corpus.bytes_per_token
    if corpus.source != "text":
        summary["token_shards"] = corpus.source
    if val_loss is not None:
        summary.update(val_loss=val_loss, perplexity=math.exp(min(val_loss, 50)))
        if corpus.bytes_per_token is not None:
            summary["bits_per_byte"] = val_loss / math.log(2) / corpus.bytes_per_token
    return summary
