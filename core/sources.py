"""Stage inputs that are not one path: globs, directories, mixtures, Hub datasets and Hub models.

People bring data the way other tools taught them: one file, ``crawl/*.jsonl``, a folder of shards, a
``save_to_disk`` directory, ``org/name`` from the Hugging Face Hub (``org/name:subset``, ``split=``), or a
list of those mixed with weights. Every data input of every stage takes every one of these forms, so they
are resolved here, once, before any stage runs: a glob that matches nothing or a Hub id missing from the
cache fails in one line at start-up, and the input hash (the run's fingerprint) covers exactly the matched
files or the Hub commit, which the manifest records.

A directory of token shards (lmforge's own ``index.json`` + ``shard_N.bin``, or datatrove's ``DocumentTokenizer``
``.ds`` files) is a data input of its own kind, ``tokens``: only a stage that reads tokens (the pretrainer)
takes it; :func:`token_shard_kind` tells the two formats apart.

Reading the rows is not done here (the core stays free of ``datasets``): ``lmforge.plugins.lib.data`` reads a
:class:`DataSource`. Torch-free; ``huggingface_hub`` is imported only for refs that are not local paths.
"""

from __future__ import annotations

import glob as globlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError, MissingArtifact, close_match

# File kinds the reader takes (a trailing .gz is allowed on all but parquet/arrow).
TEXT_SUFFIXES = (".txt", ".text", ".md")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".arrow")
WEB_SUFFIXES = (".html", ".htm", ".xhtml", ".warc")
READABLE = TEXT_SUFFIXES + JSON_SUFFIXES + TABLE_SUFFIXES + WEB_SUFFIXES
COLUMNAR = (".parquet", ".arrow")
# Bookkeeping files beside the data in lmforge artifacts and saved datasets: never read as rows.
NOT_DATA = {"manifest.json", "metrics.jsonl", "dataset_info.json", "state.json", "dataset_dict.json",
            "config.json", "report.json", "bad_records.jsonl"}
PART_KEYS = ("path", "subset", "split", "revision", "weight", "limit")
INPUT_KINDS = ("data", "model", "tokenizer", "path")
_GLOB_CHARS = "*?["
TOKEN_SHARDS_FORMAT = "lmforge-token-shards/"  # index.json "format" prefix of lmforge's token shard directories
DATATROVE_TOKENS = ".ds"  # datatrove DocumentTokenizer's token files (<name>.ds, .ds.index, .ds.metadata)
_SUBSET = re.compile(r"^(?P<repo>[^:@]+)(?::(?P<subset>[^@]+))?(?:@(?P<revision>.+))?$")


def suffix_of(path: str | Path) -> str:
    """The data suffix of a file: ``a.jsonl.gz`` -> ``.jsonl``; ``a.warc.gz`` -> ``.warc``."""
    path = Path(path)
    return Path(path.stem).suffix.lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def is_saved_dataset(path: Path) -> bool:
    """A ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` directory."""
    return path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_dict.json"))


@dataclass(frozen=True)
class DataPart:
    """One source of a data input, resolved.

    ``kind`` is ``files`` (a file, a glob, a directory of files), ``saved`` (a ``save_to_disk`` dir),
    ``hub`` (a Hub dataset snapshot in the HF cache, read by ``datasets`` with ``subset``/``split``) or
    ``tokens`` (a directory of token shards, see :func:`token_shard_kind`).
    """

    ref: str  # as written
    kind: str
    files: tuple[Path, ...] = ()  # the data files (kind files), the saved dir (saved), the snapshot dir (hub)
    subset: str | None = None
    split: str | None = None
    revision: str | None = None
    commit: str | None = None
    weight: float = 1.0
    limit: int | None = None

    @property
    def plain(self) -> bool:
        """No weight, limit, subset or split: the part is just its files."""
        return (self.weight == 1.0 and self.limit is None and self.subset is None and self.split is None)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ref": self.ref, "kind": self.kind}
        if self.kind == "files":
            out["files"] = len(self.files)
        else:
            out["path"] = str(self.files[0].resolve())
        for key in ("subset", "split", "revision", "commit", "limit"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.weight != 1.0:
            out["weight"] = self.weight
        return out


@dataclass(frozen=True)
class DataSource:
    """A data input resolved into its parts (one part unless it is a mixture)."""

    parts: tuple[DataPart, ...]
    spec: Any = field(default=None, compare=False)  # as written, for messages

    def __str__(self) -> str:
        return describe_spec(self.spec)

    def single_path(self) -> Path | None:
        """The one local file or directory this source is, when it is nothing more (else None)."""
        if len(self.parts) == 1 and self.parts[0].plain and self.parts[0].kind != "hub":
            part = self.parts[0]
            ref = Path(part.ref).expanduser()
            if ref.exists() and not any(ch in part.ref for ch in _GLOB_CHARS):
                return ref
        return None

    def files(self) -> list[Path]:
        return [f for part in self.parts if part.kind == "files" for f in part.files]

    def hash(self) -> str:
        """Content hash: sha256 of the matched files / saved dirs, the commit of Hub parts, and the options."""
        from . import artifacts

        single = self.single_path()
        if single is not None:
            return artifacts.hash_path(single)
        pieces = []
        for part in self.parts:
            if part.kind == "hub":
                content = f"hub:{part.ref}@{part.commit or part.revision or 'main'}"
            else:
                content = [[str(f.name), artifacts.hash_path(f)] for f in part.files]
            pieces.append({**{k: v for k, v in part.describe().items() if k not in ("path", "ref", "files")},
                           "content": content})
        return "sources:" + artifacts.fingerprint(pieces)

    def describe(self) -> dict[str, Any]:
        single = self.single_path()
        if single is not None:
            return {"path": str(single.resolve())}
        return {"spec": self.spec, "sources": [part.describe() for part in self.parts]}


def describe_spec(spec: Any) -> str:
    if isinstance(spec, (list, tuple)):
        return "[" + ", ".join(describe_spec(s) for s in spec) + "]"
    if isinstance(spec, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in spec.items()) + "}"
    return os.fspath(spec) if isinstance(spec, os.PathLike) else str(spec)


def resolve_data(spec: Any, where: str = "") -> DataSource:
    """A data input as written (path, glob, dir, Hub id, dict with options, or a list of those), resolved.

    Raises a one-line :class:`DataError` / :class:`ConfigError` naming ``where`` for anything that cannot
    be read: a pattern matching nothing, an empty directory, an unknown key, a Hub id not in the cache.
    """
    if isinstance(spec, DataSource):
        return spec
    spec = _plain(spec)
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise ConfigError(f"{where or 'data'}: an empty list of data sources")
    parts = tuple(_resolve_part(item, f"{where or 'data'}[{i}]" if isinstance(spec, list) else where)
                  for i, item in enumerate(items))
    return DataSource(parts=parts, spec=spec)


def _plain(spec: Any) -> Any:
    """OmegaConf containers and paths as plain Python values."""
    if hasattr(spec, "_metadata") or type(spec).__name__ in ("DictConfig", "ListConfig"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, tuple):
        return list(spec)
    if isinstance(spec, os.PathLike):
        return os.fspath(spec)
    return spec


def _resolve_part(item: Any, where: str) -> DataPart:
    """One source; ``where`` (the config key or stage input) prefixes its errors."""
    try:
        return _resolve_one(item, where or "data")
    except (DataError, MissingArtifact) as exc:
        if not where or str(exc).startswith(where):
            raise
        raise type(exc)(f"{where}: {exc}") from None


def _resolve_one(item: Any, where: str) -> DataPart:
    options: dict[str, Any] = {}
    if isinstance(item, dict):
        unknown = [k for k in item if k not in PART_KEYS]
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key{close_match(unknown[0], PART_KEYS)}; a data "
                              f"source takes {', '.join(PART_KEYS)}")
        if not item.get("path"):
            raise ConfigError(f"{where}.path: not set; name a file, glob, directory or Hub dataset id")
        options = {k: v for k, v in item.items() if k != "path"}
        item = item["path"]
    item = _plain(item)
    if not isinstance(item, str) or not item.strip():
        raise ConfigError(f"{where}: expected a path, glob or Hub dataset id, got {type(item).__name__}")
    weight = options.get("weight", 1.0)
    limit = options.get("limit")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ConfigError(f"{where}.weight: expected a number >= 0, got {weight!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"{where}.limit: expected a whole number of rows >= 0, got {limit!r}")
    common = {"weight": float(weight), "limit": limit}
    for key in ("subset", "split", "revision"):
        if options.get(key) is not None and not isinstance(options[key], str):
            raise ConfigError(f"{where}.{key}: expected a string, got {options[key]!r}")

    text = item.strip()
    local = Path(text).expanduser()
    if any(ch in text for ch in _GLOB_CHARS) and not local.exists():
        return _local_part(text, where, _glob(text), options, common)
    if local.exists():
        return _local_part(text, where, [local], options, common)
    return _hub_part(text, where, options, common)


def _glob(pattern: str) -> list[Path]:
    matches = sorted(Path(p) for p in globlib.glob(os.path.expanduser(pattern), recursive=True))
    if not matches:
        raise DataError(f"{pattern}: the pattern matches no files")
    return matches


def token_shard_kind(directory: Path) -> str | None:
    """``lmforge`` (an ``index.json`` of format ``lmforge-token-shards/…``), ``datatrove`` (``.ds`` token files,
    in it or below) or None for a directory that holds no token shards; a :class:`DataError` for one that
    mixes token shards with another format or with text files."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    index, lmforge = directory / "index.json", False
    if index.is_file():
        try:
            lmforge = str(json.loads(index.read_text()).get("format", "")).startswith(TOKEN_SHARDS_FORMAT)
        except (ValueError, AttributeError, OSError):
            lmforge = False
    datatrove = sorted(p.relative_to(directory).as_posix() for p in directory.rglob(f"*{DATATROVE_TOKENS}")
                       if p.is_file())
    if lmforge and datatrove:
        raise DataError(f"{directory}: mixes two token shard formats (lmforge's index.json and datatrove's "
                        f"{datatrove[0]}); give each its own directory")
    if not (lmforge or datatrove):
        return None
    text = [p for p in data_files_in(directory) if p != index]
    if text:
        raise DataError(f"{directory}: mixes token shards ({'index.json' if lmforge else datatrove[0]}) with text "
                        f"files ({text[0].relative_to(directory)}); give each its own directory")
    return "lmforge" if lmforge else "datatrove"


def _local_part(ref: str, where: str, paths: list[Path], options: dict, common: dict) -> DataPart:
    for key in ("subset", "revision"):
        if options.get(key) is not None:
            raise ConfigError(f"{where}.{key}: only a Hub dataset id takes a {key}; '{ref}' is a local path")
    if len(paths) == 1 and token_shard_kind(paths[0]):
        if options.get("split") is not None or common["weight"] != 1.0 or common["limit"] is not None:
            raise ConfigError(f"{where}: '{ref}' is a directory of token shards; it takes no split, weight or limit")
        return DataPart(ref=ref, kind="tokens", files=(paths[0],))
    if len(paths) == 1 and is_saved_dataset(paths[0]):
        return DataPart(ref=ref, kind="saved", files=(paths[0],), split=options.get("split"), **common)
    if options.get("split") is not None:
        raise ConfigError(f"{where}.split: only a Hub dataset id or a saved DatasetDict takes a split; '{ref}' "
                          "is files")
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            if is_saved_dataset(path):
                raise DataError(f"{path}: a saved dataset inside a glob; name it on its own")
            files += data_files_in(path)
        elif suffix_of(path) in READABLE:
            files.append(path)
        elif len(paths) == 1:
            raise DataError(f"{path}: unsupported file type; expected one of {', '.join(READABLE)} (or .gz)")
    if not files:
        what = "directory" if len(paths) == 1 and paths[0].is_dir() else "pattern"
        raise DataError(f"{ref}: the {what} holds no data files ({', '.join(READABLE)}, .gz) or saved dataset")
    return DataPart(ref=ref, kind="files", files=tuple(files), **common)


def data_files_in(directory: Path) -> list[Path]:
    """The data files of a directory, sorted: its parquet/arrow shards if it has any (an lmforge or
    ``datasets`` artifact), else every readable file; bookkeeping and hidden files are skipped."""
    found = sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in NOT_DATA
                   and not any(part.startswith(".") for part in p.relative_to(directory).parts)
                   and suffix_of(p) in READABLE)
    columnar = [p for p in found if suffix_of(p) in COLUMNAR]
    if columnar:
        return columnar
    return [p for p in found if not (p.name == "README.md" and p.parent == directory)]


def _hub_part(ref: str, where: str, options: dict, common: dict) -> DataPart:
    from . import hub

    match = _SUBSET.match(ref)
    repo = match.group("repo") if match else ref
    if suffix_of(repo) in READABLE or repo.startswith((".", "/", "~")) or not hub.looks_like_repo_id(repo):
        raise MissingArtifact(f"{ref}: not found (no such file or directory, and not a Hub dataset id like "
                              "org/name)")
    subset = match.group("subset") if match else None
    at_revision = match.group("revision") if match else None
    if subset and options.get("subset") and subset != options["subset"]:
        raise ConfigError(f"{where}.subset: '{options['subset']}' disagrees with ':{subset}' in '{ref}'")
    revision = options.get("revision") or at_revision
    if options.get("revision") and at_revision and options["revision"] != at_revision:
        raise ConfigError(f"{where}.revision: '{options['revision']}' disagrees with '@{at_revision}' in '{ref}'")
    snapshot, commit, revision = hub.resolve_repo(repo, revision, repo_type="dataset",
                                                  what=f"{where}: dataset")
    return DataPart(ref=ref, kind="hub", files=(Path(snapshot),), subset=subset or options.get("subset"),
                    split=options.get("split"), revision=revision, commit=commit, **common)


# ----------------------------------------------------------------------------------------- stage inputs

def input_kind(stage_cls, name: str) -> str:
    """What a stage input is: ``data``, ``model``, ``tokenizer`` or ``path`` (the stage's ``input_kinds``,
    else by its name)."""
    declared = getattr(stage_cls, "input_kinds", {}) or {}
    if name in declared:
        return declared[name]
    if name in ("model", "reward_model", "ref_model", "policy"):
        return "model"
    if name == "tokenizer":
        return "tokenizer"
    if name in ("text", "data", "prompts", "eval_data"):
        return "data"
    return "path"


def resolve_input(kind: str, value: Any, where: str):
    """A stage input as the stage receives it.

    ``data``: a :class:`pathlib.Path` when it is one plain local file or directory (as before), else a
    :class:`DataSource`. ``model``/``tokenizer``: a local directory, or a Hub id resolved through the HF
    cache (``lmforge.hub.resolve_model_ref``). ``path``: an existing path.
    """
    if kind == "data":
        source = resolve_data(value, where)
        single = source.single_path()
        return single if single is not None else source
    if kind in ("model", "tokenizer"):
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{where}: expected a {kind} directory or Hub id, got {type(value).__name__}")
        if isinstance(value, os.PathLike) and not isinstance(value, Path):  # already resolved
            return value
        local = Path(value).expanduser()
        if local.exists():
            return local
        from . import hub

        text = str(value)
        if text.startswith((".", "/", "~")) or not hub.looks_like_repo_id(hub.split_revision(text)[0]):
            raise MissingArtifact(f"{where} not found: {text}")
        try:
            return hub.resolve_model_ref(str(value))
        except MissingArtifact as exc:
            raise MissingArtifact(f"{where}: {exc}") from None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{where}: expected a path, got {type(value).__name__}")
    path = Path(value)
    if not path.exists():
        raise MissingArtifact(f"{where} not found: {path}")
    return path


def input_hash(value: Any) -> str:
    """The content hash of a resolved stage input (files, artifact fingerprint, or Hub commit)."""
    from . import artifacts

    if isinstance(value, DataSource):
        return value.hash()
    commit = getattr(value, "commit", None)
    if commit:
        return f"hub:{getattr(value, 'repo_id', None) or value}@{commit}"
    return artifacts.hash_path(Path(value))


def input_record(value: Any, digest: str) -> dict[str, Any]:
    """What the manifest says about one input: where it was read from, its hash, and any Hub commit."""
    if isinstance(value, DataSource):
        return {**value.describe(), "hash": digest}
    record: dict[str, Any] = {"path": str(Path(value).resolve()), "hash": digest}
    if getattr(value, "commit", None):
        record.update(ref=getattr(value, "ref", None), commit=value.commit)
    return record
