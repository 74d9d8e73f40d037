"""Parameter validation, a leaf module: the checks every config dataclass's ``__post_init__`` uses.

Stages, evaluators, trackers and plugins of every kind call these, so a bad value reads the same
everywhere: ``key: what was expected, got x``. :func:`lmforge.config.build_params` prefixes the option
it checks (``finetuner.``), so one check serves every stage name.
"""

from __future__ import annotations

import dataclasses

from .errors import ConfigError, close_match


class ParamError(ConfigError):
    """Raised by a parameter dataclass's ``__post_init__`` as ``"key: what was expected, got x"``;
    :func:`build_params` prefixes the option it checks (``finetuner.``), so one class serves every stage name."""


def at_least(params, low, *keys: str, exclusive: bool = False) -> None:
    """Each of ``keys`` (when not None) is >= ``low`` (> with ``exclusive``), else a ParamError."""
    for key in keys:
        value = getattr(params, key)
        if value is not None and (value <= low if exclusive else value < low):
            raise ParamError(f"{key}: must be {'>' if exclusive else '>='} {low}, got {value}")


def in_range(params, key: str, low: float, high: float) -> None:
    value = getattr(params, key)
    if value is not None and not low <= value <= high:
        raise ParamError(f"{key}: must be in [{low}, {high}], got {value}")


def check_bounds(params) -> None:
    """Generic sanity for threshold dataclasses: numbers named ``min_*``/``max_*`` are >= 0, a ``min_x`` is at
    most its ``max_x``, and a ``*fraction*`` lies in [0, 1]."""
    values = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key, value in numbers.items():
        if "fraction" in key:
            in_range(params, key, 0.0, 1.0)
        elif key.startswith(("min_", "max_")) and value < 0:
            raise ParamError(f"{key}: must be >= 0, got {value}")
        partner = "max_" + key[4:] if key.startswith("min_") else None
        if partner in numbers and value > numbers[partner]:
            raise ParamError(f"{key}: {value} is above {partner} ({numbers[partner]})")


def one_of(params, key: str, choices) -> None:
    value = getattr(params, key)
    if value is not None and value not in choices:
        raise ParamError(f"{key}: unknown {value!r}{close_match(value, choices)}; one of: "
                         f"{', '.join(map(str, choices))}")
