"""Model references: a local directory, or a Hugging Face Hub id read through the normal HF cache.

Users coming from other tools name models as ``org/name`` (optionally ``org/name@revision``) and expect the
copy already in their Hugging Face cache to be used, offline included. One function answers "which directory
and which commit is this ref?" for every place that opens a model, so the manifest can record the commit and
a run is reproducible. A local directory always wins over a Hub id of the same spelling.

Torch-free; ``huggingface_hub`` is imported only when a ref is not a local directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingArtifact

# Files worth fetching for a model: weights (safetensors only), configs, tokenizer files, chat templates.
MODEL_FILES = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model ref lives on disk: ``path`` (a directory), the ``ref`` as given, and the Hub ``commit``.

    ``commit`` is None for a local directory; ``revision`` is the branch, tag or commit asked for (None = main).
    """

    path: Path
    ref: str
    commit: str | None = None
    revision: str | None = None

    @property
    def repo_id(self) -> str | None:
        return None if self.commit is None else split_revision(self.ref)[0]

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def split_revision(ref: str) -> tuple[str, str | None]:
    """``'org/name@rev'`` -> ``('org/name', 'rev')``; a ref without ``@`` has no revision."""
    name, sep, revision = str(ref).rpartition("@")
    if sep and name and revision and "/" not in revision:
        return name, revision
    return str(ref), None


def hub_offline() -> bool:
    """Whether the Hub may not be contacted (``HF_HUB_OFFLINE`` as set now, not only at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def hub_cache_dir() -> str:
    """The Hugging Face hub cache as the environment names it now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def looks_like_repo_id(ref: str) -> bool:
    """``name`` or ``org/name``: no path separators beyond one slash, no leading ``.``, ``/`` or ``~``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if ref.startswith((".", "/", "~")) or "\\" in ref or ref.count("/") > 1:
        return False
    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return True


def resolve_repo(ref: str, revision: str | None = None, *, repo_type: str = "model",
                 allow_patterns: list[str] | None = None, what: str = "model") -> tuple[Path, str, str | None]:
    """A Hub repo's snapshot dir and commit: from the cache first, downloaded only when not offline.

    Returns ``(snapshot_dir, commit, revision)``. Raises :class:`MissingArtifact` with one line naming the
    ref and what was tried.
    """
    repo_id, at_revision = split_revision(ref)
    if revision and at_revision and revision != at_revision:
        raise MissingArtifact(f"{what} '{ref}': revision '{at_revision}' in the ref and revision='{revision}' "
                              "disagree; give one")
    revision = revision or at_revision
    cache = hub_cache_dir()
    offline = hub_offline()
    tried = f"not a directory and not in the Hugging Face cache ({cache})"
    if not looks_like_repo_id(repo_id):
        raise MissingArtifact(f"{what} '{ref}' not found: not a directory (and not a Hub id like org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    kwargs = {"repo_type": repo_type, "revision": revision, "cache_dir": cache, "allow_patterns": allow_patterns}
    try:
        path = snapshot_download(repo_id, local_files_only=True, **kwargs)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        repo_dir = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
        if revision and (repo_dir / "snapshots").is_dir():
            cached = sorted(p.name for p in (repo_dir / "refs").glob("*")) if (repo_dir / "refs").is_dir() else []
            tried = (f"revision '{revision}' is not in the Hugging Face cache ({repo_dir}; cached refs: "
                     f"{', '.join(cached) or 'none'})")
        if offline:
            raise MissingArtifact(f"{what} '{ref}' not found: {tried} (HF_HUB_OFFLINE=1)") from None
        try:
            path = snapshot_download(repo_id, **kwargs)
        except (RepositoryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MissingArtifact(f"{what} '{ref}' not found: {tried}, and the Hub download failed: {first}") from None
    path = Path(path)
    commit = path.name if _COMMIT.match(path.name) else None
    return path, commit, revision


def resolve_model_ref(ref: str | os.PathLike, revision: str | None = None) -> ResolvedModel:
    """A model dir for ``ref``: a local directory when one exists, else ``org/name[@revision]`` from the HF cache.

    Offline (``HF_HUB_OFFLINE=1``) only the cache is read; online a missing model is downloaded (safetensors,
    configs and tokenizer files only) into the normal cache, as ``transformers`` would.
    """
    if isinstance(ref, ResolvedModel):
        return ref
    text = os.fspath(ref) if isinstance(ref, os.PathLike) else str(ref)
    local = Path(text).expanduser()
    if local.is_dir():
        return ResolvedModel(path=local, ref=text, commit=None, revision=None)
    if local.exists():
        raise MissingArtifact(f"model '{text}': is a file, expected a model directory or a Hub id (org/name)")
    path, commit, revision = resolve_repo(text, revision, allow_patterns=MODEL_FILES)
    if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise MissingArtifact(f"model '{text}': the cached snapshot {path} has no config.json or tokenizer files")
    return ResolvedModel(path=path, ref=text, commit=commit, revision=revision)
