"""The run directory: typed ``run.*`` settings, ``run.name`` kept inside ``run.root``, and one run at a time.

Two ``lmforge run`` on the same ``run.name`` would interleave their metrics, overwrite each other's
``config.json`` and race on the stage directories. :func:`run_lock` takes an OS-level lock (``filelock``)
on ``<run dir>/.lock`` for the whole run: the second run fails at once with one line naming the holder
(pid, host, start time, written beside the lock). The operating system drops the lock when the holder
dies, even by SIGKILL, so a stale lock never needs cleaning up: the next run simply takes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from .errors import ConfigError, LmforgeError

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.holder.json"


class RunInUse(LmforgeError):
    """Another process holds the run directory's lock."""


@dataclass
class RunSettings:
    """The ``run`` group: where artifacts go and how the run behaves. Checked before anything runs."""

    name: str = "default"  # artifacts go to <root>/<name>/<stage>/; relative, may contain '/', never '..'
    root: str = "runs"
    seed: int = 0
    force: bool = False  # redo stages even when their artifact is complete
    quiet: bool = False
    trackers: list[Any] = field(default_factory=list)
    report: bool = True


def run_settings(run_cfg: dict[str, Any] | None) -> RunSettings:
    """``cfg.run`` checked strictly: ``run.force=maybe`` or ``run.seed=abc`` is a one-line ConfigError.

    Keys this core does not know (added by plugins' YAML) are left to their owners.
    """
    values = dict(run_cfg or {})
    known = {f.name: f for f in dataclasses.fields(RunSettings)}
    settings = RunSettings()
    for key, value in values.items():
        if key not in known:
            continue
        expected = known[key].type
        ok = {
            "str": isinstance(value, str) and value != "",
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "list[Any]": isinstance(value, (list, tuple)),
        }[expected]
        if not ok:
            what = {"str": "a non-empty string", "int": "an integer", "bool": "true or false",
                    "list[Any]": "a list, e.g. [tensorboard]"}[expected]
            raise ConfigError(f"run.{key}: expected {what}, got {value!r}")
        setattr(settings, key, value)
    if not 0 <= settings.seed < 2**32:
        raise ConfigError(f"run.seed: expected an integer in [0, 2**32), got {settings.seed}")
    name = PurePath(settings.name)
    if name.is_absolute() or ".." in name.parts or settings.name.strip() in ("", "."):
        raise ConfigError(f"run.name: {settings.name!r} must be a relative name inside run.root "
                          f"(no leading '/', no '..'), e.g. run.name=exp1")
    return settings


def run_dir_of(settings: RunSettings) -> Path:
    return Path(settings.root) / settings.name


def check_run_location(settings: RunSettings) -> Path:
    """Fail in one line, creating nothing, when the run directory cannot be made: a file in the way, or
    the nearest existing directory is not writable."""
    root = Path(settings.root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"run.root: {root} is a file; expected a directory (or a path that does not exist yet)")
    run_dir = run_dir_of(settings)
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"run.name: {parent} is a file; expected a directory")
            if not os.access(parent, os.W_OK):
                raise ConfigError(f"run.root: cannot write in {parent} (read-only or permission denied); "
                                  f"choose another run.root")
            break
    return run_dir


def prepare_run_dir(settings: RunSettings) -> Path:
    """Create the run directory, or fail in one line when run.root is a file, read-only or full."""
    root = Path(settings.root)
    run_dir = check_run_location(settings)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"run.root: cannot write in {run_dir}: {os_reason(exc)}") from None
    if root.resolve() not in [run_dir.resolve(), *run_dir.resolve().parents]:
        raise ConfigError(f"run.name: {settings.name!r} leads outside run.root ({root}) through a symlink")
    return run_dir


def os_reason(exc: OSError) -> str:
    """A short reason for an OSError: 'no space left on device', 'read-only file system', …"""
    reasons = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
               errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "a parent is a file, not a directory",
               errno.EEXIST: "already exists"}
    return reasons.get(exc.errno, exc.strerror or exc.__class__.__name__)


def holder(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold ``<run_dir>/.lock`` for the block; a second holder fails at once with one line naming the first."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    lock = FileLock(str(run_dir / LOCK_NAME), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = holder(run_dir)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who["started"])) if "started" in who else "?"
        raise RunInUse(f"run.name: {run_dir} is in use by another lmforge run (pid {who.get('pid', '?')} on "
                       f"{who.get('host', '?')}, started {since}); wait for it to finish or choose another "
                       f"run.name") from None
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        tmp = run_dir / f"{HOLDER_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, run_dir / HOLDER_NAME)
        yield info
    finally:
        with contextlib.suppress(OSError):
            (run_dir / HOLDER_NAME).unlink()
        lock.release()
