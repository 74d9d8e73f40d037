"""Data formats: how SFT, preference and prompt records in the wild become chat messages.

Users bring alpaca (instruction/input/output), ShareGPT (conversations of from/value), OpenAI
``messages``, ``prompt``/``completion`` and whole dialogues in one string ("\\n\\nHuman: … \\n\\nAssistant: …",
as in HH-RLHF). Each is a ``data_format`` plugin; stages call :func:`load_conversations`,
:func:`load_preferences` or :func:`load_prompts`, which auto-detect the format (or take it by name) and
name the file and record index of anything malformed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge import hookimpl, registry
from lmforge.errors import DataError, close_match

from ..common import read_records

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "model": "assistant", "bot": "assistant", "chatbot": "assistant", "system": "system"}

Messages = list[dict[str, str]]


def _msg(role: str, content: Any, where: str) -> dict[str, str]:
    if not isinstance(content, str):
        raise DataError(f"{where}: message content must be a string, got {type(content).__name__}")
    mapped = ROLE_ALIASES.get(str(role).lower())
    if mapped is None:
        raise DataError(f"{where}: unknown role '{role}'{close_match(role, ROLE_ALIASES)}")
    return {"role": mapped, "content": content}


def _as_messages(value: Any, where: str) -> Messages:
    """A string (one user/assistant turn decided by the caller) or a list of role/content or from/value dicts."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: expected a non-empty list of messages")
    out = []
    for turn in value:
        if not isinstance(turn, dict):
            raise DataError(f"{where}: a message must be an object, got {type(turn).__name__}")
        if "role" in turn:
            out.append(_msg(turn["role"], turn.get("content"), where))
        elif "from" in turn:
            out.append(_msg(turn["from"], turn.get("value"), where))
        else:
            raise DataError(f"{where}: a message needs 'role'/'content' or 'from'/'value'")
    return out


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


class MessagesFormat(DataFormat):
    """OpenAI style: ``{"messages": [{"role", "content"}, …]}`` (optionally ``chosen``/``rejected``)."""

    name, keys = "messages", ("messages",)

    def conversation(self, record, where):
        return _as_messages(record["messages"], where)

    def preference(self, record, where):
        if "chosen" not in record or "rejected" not in record:
            return super().preference(record, where)
        return {"prompt": _as_messages(record["messages"], where),
                "chosen": _answer(record["chosen"], where), "rejected": _answer(record["rejected"], where)}


class ShareGPTFormat(DataFormat):
    """ShareGPT: ``{"conversations": [{"from", "value"}], "system"?, "chosen"?, "rejected"?}``."""

    name, keys = "sharegpt", ("conversations",)

    def conversation(self, record, where):
        messages = _as_messages(record["conversations"], where)
        if record.get("system"):
            messages = [{"role": "system", "content": record["system"]}] + messages
        return messages

    def preference(self, record, where):
        if "chosen" not in record or "rejected" not in record:
            return super().preference(record, where)
        return {"prompt": self.conversation(record, where),
                "chosen": _answer(record["chosen"], where), "rejected": _answer(record["rejected"], where)}


class AlpacaFormat(DataFormat):
    """Alpaca: ``{"instruction", "input"?, "output", "system"?, "history"?}``."""

    name, keys = "alpaca", ("instruction", "output")

    def conversation(self, record, where):
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        for pair in record.get("history") or []:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise DataError(f"{where}: history entries must be [user, assistant] pairs")
            messages += [_msg("user", pair[0], where), _msg("assistant", pair[1], where)]
        instruction = record["instruction"]
        if record.get("input"):
            instruction = f"{instruction}\n\n{record['input']}"
        messages += [_msg("user", instruction, where), _msg("assistant", record["output"], where)]
        return messages


class PromptCompletionFormat(DataFormat):
    """``{"prompt", "completion"}`` or, for preferences, ``{"prompt", "chosen", "rejected"}``."""

    name, keys = "prompt_completion", ("prompt",)

    def detect(self, record):
        return "prompt" in record and "messages" not in record and "conversations" not in record

    def _prompt(self, record, where):
        value = record["prompt"]
        return [_msg("user", value, where)] if isinstance(value, str) else _as_messages(value, where)

    def conversation(self, record, where):
        if "completion" not in record:
            return super().conversation(record, where)
        return self._prompt(record, where) + _answer(record["completion"], where)

    def preference(self, record, where):
        if "chosen" not in record:
            return super().preference(record, where)
        return {"prompt": self._prompt(record, where),
                "chosen": _answer(record["chosen"], where), "rejected": _answer(record["rejected"], where)}

    def prompt(self, record, where):
        return self._prompt(record, where)


class DialogueFormat(DataFormat):
    """Whole dialogues in one string, HH-RLHF style: ``"\\n\\nHuman: …\\n\\nAssistant: …"``.

    For preferences, ``chosen`` and ``rejected`` share the dialogue up to the last assistant turn: that is
    the prompt; the two final answers are the pair.
    """

    name = "dialogue"

    def detect(self, record):
        for key in ("chosen", "text", "dialogue"):
            if isinstance(record.get(key), str) and "Human:" in record[key] and "Assistant:" in record[key]:
                return True
        return False

    @staticmethod
    def parse(text: str, where: str) -> Messages:
        import re

        parts = re.split(r"\n\n(Human|Assistant|System): ?", "\n\n" + text.lstrip("\n"))
        messages = [_msg(parts[i], parts[i + 1].strip(), where) for i in range(1, len(parts) - 1, 2)]
        if not messages:
            raise DataError(f"{where}: no 'Human:'/'Assistant:' turns found in the dialogue")
        return messages

    def conversation(self, record, where):
        key = next(k for k in ("text", "dialogue", "chosen") if isinstance(record.get(k), str))
        return self.parse(record[key], where)

    def preference(self, record, where):
        chosen, rejected = self.parse(record["chosen"], where), self.parse(record["rejected"], where)
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            raise DataError(f"{where}: chosen and rejected must each end with an assistant turn")
        if chosen[:-1] != rejected[:-1]:
            raise DataError(f"{where}: chosen and rejected dialogues differ before their final answer")
        return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}


def _answer(value: Any, where: str) -> Messages:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    return _as_messages(value, where)


BUILTIN_FORMATS = (MessagesFormat, ShareGPTFormat, AlpacaFormat, PromptCompletionFormat, DialogueFormat)


@hookimpl
def lmforge_register(registry):
    for cls in BUILTIN_FORMATS:
        registry.add("data_format", cls.name, cls)


def detect_format(record: dict, where: str, wanted: str = "auto") -> DataFormat:
    reg = registry()
    if wanted != "auto":
        return reg.get("data_format", wanted)()
    formats = [reg.get("data_format", name)() for name in reg.names("data_format")]
    matches = [f for f in formats if f.detect(record)]
    if len(matches) == 1:
        return matches[0]
    keys = ", ".join(sorted(record)) or "(none)"
    if not matches:
        raise DataError(f"{where}: unrecognised record (keys: {keys}); known formats: "
                        f"{', '.join(f.name for f in formats)}; set the format explicitly")
    raise DataError(f"{where}: ambiguous record (keys: {keys}) matches formats "
                    f"{', '.join(f.name for f in matches)}; set the format explicitly")


def _load(path, fmt: str, method: str, **kwargs) -> list:
    path = Path(path)
    if path.suffix in (".txt", ".text") and method == "prompt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise DataError(f"{path}: no prompts")
        return [[{"role": "user", "content": line}] for line in lines]
    records = read_records(path)
    adapter = detect_format(records[0], f"{path}: record 0", fmt)
    out = []
    for index, record in enumerate(records):
        out.append(getattr(adapter, method)(record, f"{path}: record {index}"))
    return out


def load_conversations(path, fmt: str = "auto", system_prompt: str | None = None,
                       placeholders: dict[str, str] | None = None) -> list[Messages]:
    """SFT conversations; ``system_prompt`` is added where a conversation has none; ``{{key}}`` filled in."""
    conversations = _load(path, fmt, "conversation")
    if system_prompt:
        conversations = [c if c[0]["role"] == "system" else [{"role": "system", "content": system_prompt}] + c
                         for c in conversations]
    if placeholders:
        for conversation in conversations:
            for message in conversation:
                for key, value in placeholders.items():
                    message["content"] = message["content"].replace("{{" + key + "}}", str(value))
    return conversations


def load_preferences(path, fmt: str = "auto") -> list[dict[str, Messages]]:
    """Preference pairs as ``{"prompt", "chosen", "rejected"}`` message lists."""
    return _load(path, fmt, "preference")


def load_prompts(path, fmt: str = "auto") -> list[Messages]:
    """Prompts as message lists (the conversation up to its last user turn); .txt: one prompt a line."""
    return _load(path, fmt, "prompt")
