"""What every record shape shares: the ``DataFormat`` base class and the message helpers (role names mapped
to user / assistant / system, contents checked to be strings, errors naming the record)."""

from __future__ import annotations

import math
from typing import Any

from lmforge.errors import DataError, close_match

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "model": "assistant", "bot": "assistant", "chatbot": "assistant", "system": "system"}

Messages = list[dict[str, str]]


def _is_empty(value: Any) -> bool:
    """No value: JSON ``null``, an empty csv cell (None, or NaN from pandas)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def record_keys(record: dict) -> str:
    """The record's keys in its own order, each value that is not text or messages marked:
    ``prompt, chosen (int), completion (empty)``."""
    parts = []
    for key, value in record.items():
        if _is_empty(value):
            parts.append(f"{key} (empty)")
        elif isinstance(value, (str, list, dict)):
            parts.append(str(key))
        else:
            parts.append(f"{key} ({type(value).__name__})")
    return ", ".join(parts) or "(none)"


def _problem(record: dict, key: str, messages: bool = True) -> str | None:
    """What is wrong with ``record[key]`` as text (or, with ``messages``, a list of messages); None if fine."""
    if key not in record:
        return f"'{key}' is missing"
    value = record[key]
    if _is_empty(value):
        return f"'{key}' is empty"
    if isinstance(value, str) or (messages and isinstance(value, dict)):
        return None
    if messages and isinstance(value, list):
        return None if value else f"'{key}' is an empty list"
    kind = type(value).__name__
    shown = f" ({value!r})" if isinstance(value, (int, float)) else ""  # a csv cell read as a number: 4 -> 4.0
    return f"'{key}' is {'an' if kind[0] in 'aeiou' else 'a'} {kind}{shown}"


def _field(record: dict, key: str, where: str, needs: str, messages: bool = True) -> Any:
    """``record[key]`` when it is text (or messages); else one line naming the field, what the format
    ``needs``, and the keys the record has."""
    problem = _problem(record, key, messages)
    if problem is not None:
        raise DataError(f"{where}: {problem}; {needs}; this record has {record_keys(record)}")
    return record[key]


def _pair(record: dict, where: str, needs: str = "a preference pair needs 'chosen' and 'rejected' "
                                                 "(text or messages)", messages: bool = True,
          keys: tuple[str, ...] = ("chosen", "rejected")) -> None:
    """A preference record's ``chosen`` and ``rejected`` (``keys``) are all there and text (or messages); else
    one line with what is wrong with each and the keys the record has."""
    problems = [p for p in (_problem(record, key, messages) for key in keys) if p]
    if problems:
        listed = ", ".join(problems[:-1]) + " and " + problems[-1] if len(problems) > 1 else problems[0]
        raise DataError(f"{where}: {needs}: {listed}; this record has {record_keys(record)}")


def _msg(role: str, content: Any, where: str, field: str = "") -> dict[str, str]:
    if not isinstance(content, str):
        what = f"'{field}'" if field else "message content"
        raise DataError(f"{where}: {what} must be a string, got {type(content).__name__}")
    mapped = ROLE_ALIASES.get(str(role).lower())
    if mapped is None:
        raise DataError(f"{where}: unknown role '{role}'{close_match(role, ROLE_ALIASES)}; "
                        f"expected one of {', '.join(sorted(ROLE_ALIASES))}")
    return {"role": mapped, "content": content}


def _as_messages(value: Any, where: str) -> Messages:
    """A list of role/content or from/value dicts (a single dict counts as a list of one)."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: expected a non-empty list of messages, got {type(value).__name__}")
    out = []
    for turn in value:
        if not isinstance(turn, dict):
            raise DataError(f"{where}: a message must be an object, got {type(turn).__name__}")
        if "role" in turn:
            out.append(_msg(turn["role"], turn.get("content"), where))
        elif "from" in turn:
            out.append(_msg(turn["from"], turn.get("value"), where))
        else:
            raise DataError(f"{where}: a message needs 'role'/'content' or 'from'/'value', got keys "
                            f"{', '.join(sorted(turn)) or '(none)'}")
    return out


def _answer(value: Any, where: str) -> Messages:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    return _as_messages(value, where)


def _with_answer(conversation: Messages, record: dict, where: str) -> Messages:
    """A prompt-only conversation of a preference record gets its ``chosen`` answer (SFT on the good one)."""
    if conversation[-1]["role"] != "assistant" and "chosen" in record:
        needs = "a conversation without a final assistant turn takes its answer from 'chosen' (text or messages)"
        return conversation + _answer(_field(record, "chosen", where, needs), where)
    return conversation


class DataFormat:
    """One record shape. Subclasses implement what they can; the rest say so in one line."""

    name = ""
    keys: tuple[str, ...] = ()

    def detect(self, record: dict) -> bool:
        return all(key in record for key in self.keys)

    def conversation(self, record: dict, where: str) -> Messages:
        raise DataError(f"{where}: the '{self.name}' format holds no SFT conversations; this record has "
                        f"{record_keys(record)}")

    def preference(self, record: dict, where: str) -> dict[str, Messages]:
        raise DataError(f"{where}: the '{self.name}' format holds no preference pairs (chosen/rejected); this "
                        f"record has {record_keys(record)}")

    def prompt(self, record: dict, where: str) -> Messages:
        conversation = self.conversation(record, where)
        while conversation and conversation[-1]["role"] == "assistant":
            conversation = conversation[:-1]
        if not conversation:
            raise DataError(f"{where}: no prompt turns")
        return conversation

    def prompt_completion(self, record: dict, where: str) -> dict[str, Messages]:
        """The conversation split before its last assistant turn: ``{"prompt", "completion"}``."""
        conversation = self.conversation(record, where)
        if conversation[-1]["role"] != "assistant" or len(conversation) < 2:
            raise DataError(f"{where}: needs prompt turns followed by a final assistant turn")
        return {"prompt": conversation[:-1], "completion": conversation[-1:]}
