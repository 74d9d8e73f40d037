"""What every record shape shares: the ``DataFormat`` base class and the message helpers (role names mapped
to user / assistant / system, contents checked to be strings, errors naming the record)."""

from __future__ import annotations

from typing import Any

from lmforge.errors import DataError, close_match

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "model": "assistant", "bot": "assistant", "chatbot": "assistant", "system": "system"}

Messages = list[dict[str, str]]


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
        return conversation + _answer(record["chosen"], where)
    return conversation


class DataFormat:
    """One record shape. Subclasses implement what they can; the rest say so in one line."""

    name = ""
    keys: tuple[str, ...] = ()

    def detect(self, record: dict) -> bool:
        return all(key in record for key in self.keys)

    def conversation(self, record: dict, where: str) -> Messages:
        raise DataError(f"{where}: the '{self.name}' format holds no SFT conversations")

    def preference(self, record: dict, where: str) -> dict[str, Messages]:
        raise DataError(f"{where}: the '{self.name}' format holds no preference pairs (chosen/rejected)")

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
