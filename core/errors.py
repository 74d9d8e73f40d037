"""Errors a user can act on.

Every error lmforge raises on purpose is an :class:`LmforgeError`: its message is one line that names the
file and line, or the config key, and says what was expected. The CLI prints it as ``lmforge: error: …``
and exits non-zero; a traceback is only shown with ``LMFORGE_TRACEBACK=1``.
"""

from __future__ import annotations

import difflib


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
