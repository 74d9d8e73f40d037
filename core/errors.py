"""Errors a user can act on.

Every error lmforge raises on purpose is an :class:`LmforgeError`: its message is one line that names the
file and line, or the config key, and says what was expected. The CLI prints it as ``lmforge: error: …``
and exits 2; any other exception becomes one line too (:func:`describe`), exit 1, with the full traceback
in the run directory's ``error.log`` and on screen with ``LMFORGE_DEBUG=1`` / ``lmforge --debug``.
"""

from __future__ import annotations

import difflib
import errno
import os
import traceback


class LmforgeError(Exception):
    """A problem with the user's input or config, explained in one line."""


class ConfigError(LmforgeError):
    """An unknown, misspelt, missing or mistyped config key."""


class PluginNotFound(ConfigError):
    """No implementation registered under (kind, name)."""


class DataError(LmforgeError):
    """A malformed data file: names the file and line (or record index)."""


class MissingArtifact(LmforgeError):
    """A stage input that does not exist (or is not a complete artifact)."""


def close_match(word: str, choices) -> str:
    """' (did you mean 'x'?)' when a choice is close to ``word``, else ''."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


EXIT_BAD_INPUT = 2
EXIT_FAULT = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class Terminated(BaseException):
    """SIGTERM (``kill``, ``timeout``, a scheduler's preemption) turned into an exception, so the stage being
    written is removed, the run lock released and the error path reports it, as for Ctrl-C."""


def exit_code(exc: BaseException) -> int:
    """2 for bad input or config, 130 for Ctrl-C, 1 for anything else."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED
    if isinstance(exc, (LmforgeError, UnicodeDecodeError)):
        return EXIT_BAD_INPUT
    return EXIT_FAULT


_LIBRARIES = ("torch", "transformers", "trl", "datasets", "accelerate", "pluggy", "hydra", "omegaconf",
              "huggingface_hub", "tokenizers", "peft", "safetensors", "pyarrow", "numpy", "filelock")


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame in lmforge or a plugin's own code (not the stdlib or a library)."""
    import sysconfig

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    stdlib = sysconfig.get_paths()["stdlib"]

    def ours(name: str) -> bool:
        if name.startswith(stdlib) and "site-packages" not in name or name.startswith("<"):
            return False
        return not any(f"/{lib}/" in name for lib in _LIBRARIES)

    frame = ([f for f in frames if ours(f.filename)] or frames)[-1]
    name = frame.filename
    for marker in ("/plugins/", "/core/", "/tests/", "/site-packages/"):
        if marker in name:
            name = name[name.rindex(marker) + 1:].removeprefix("site-packages/")
            break
    return f"{name}:{frame.lineno}"


def describe(exc: BaseException) -> str:
    """One line for any exception: what happened, where, and what to do where that is known."""
    if isinstance(exc, (KeyboardInterrupt, Terminated)):
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated (SIGTERM)"
        return f"{what}; run the same command again to resume from the last checkpoint"
    if isinstance(exc, LmforgeError):
        return one_line(str(exc))
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        target = f" while writing {exc.filename}" if exc.filename else ""
        return f"no space left on device{target}; free space and run again (finished stages are kept)"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{exc.strerror or 'permission denied'}: {exc.filename or '?'}; check the path's permissions"
    if isinstance(exc, UnicodeDecodeError):
        return (f"a data file is not UTF-8 text (byte {exc.start}: {exc.reason}) at {_where(exc)}; "
                f"convert it to UTF-8")
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        package = exc.name.split(".")[0]
        return f"the Python package '{package}' is not installed (needed at {_where(exc)}); pip install {package}"
    peer = peer_lost(exc)
    if peer:
        return peer
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory at {_where(exc)}; lower the batch size or the model/sequence size"
    message = one_line(str(exc)) or "(no message)"
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{type(exc).__name__}: {message} (at {_where(exc)})"


# What gloo / NCCL / the c10d store say when another process of the run died in the middle of a collective.
PEER_LOST = ("connection reset by peer", "connection closed by peer", "broken pipe", "socket timeout",
             "remote process exited", "nccl communicator was aborted", "connection refused")


def peer_lost(exc: BaseException) -> str | None:
    """One line for a collective that failed because another rank went away, naming this rank; else None.

    The library's own text ("Read error [127.0.0.1]:8918: Connection reset by peer … GLHF!") names a socket,
    not a process; what a person needs is which process is reporting, that a peer is gone (its own log says
    why) and that a re-run resumes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    text = str(exc).lower()
    if world <= 1 or not isinstance(exc, (RuntimeError, OSError)) or not any(p in text for p in PEER_LOST):
        return None
    rank = os.environ.get("RANK", "0")
    return (f"rank {rank} of {world}: another process of this run stopped during a collective at {_where(exc)} "
            f"(its own log says why); this rank stopped too; run the same command on every machine again "
            f"to resume from the last checkpoint")


def one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())
