"""Run directories, manifests and atomic artifacts.

``runs/<run.name>/<stage>/`` holds a stage's artifact and its ``manifest.json``. A stage writes into
``runs/<run.name>/<stage>.partial/`` and that directory is renamed into place only once the artifact and its
manifest are complete, so a crash never leaves a directory that looks whole. Checkpoints live in
``runs/<run.name>/.work/<stage>/`` and survive a kill, so a re-run resumes the interrupted stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
TRACKED_PACKAGES = ("lmforge", "torch", "transformers", "datasets", "trl", "accelerate", "tokenizers",
                    "peft", "hydra-core", "pluggy")


def is_complete(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / MANIFEST).read_text())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(source: Path, target: Path) -> None:
    """Move a finished directory into place, replacing any older artifact at ``target``."""
    source, target = Path(source), Path(target)
    if target.exists():
        trash = target.with_name(f".{target.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(target, trash)
        os.replace(source, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, target)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def hash_path(path: Path) -> str:
    """A content hash of an input: an lmforge artifact's own fingerprint, else sha256 over its files."""
    path = Path(path)
    if path.is_dir() and is_complete(path):
        fingerprint = read_manifest(path).get("fingerprint")
        if fingerprint:
            return f"artifact:{fingerprint}"
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
