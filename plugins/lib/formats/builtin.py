"""The five built-in record shapes: OpenAI ``messages``, ShareGPT, alpaca, ``prompt``/``completion`` and whole
dialogues in one string (HH-RLHF). Each is a ``data_format`` plugin (registered by this package)."""

from __future__ import annotations

import re

from lmforge.errors import DataError
from lmforge.plugins.lib.formats.base import DataFormat, Messages, _answer, _as_messages, _msg, _with_answer


class MessagesFormat(DataFormat):
    """OpenAI style: ``{"messages": [{"role", "content"}, …]}`` (optionally ``chosen``/``rejected``)."""

    name, keys = "messages", ("messages",)

    def conversation(self, record, where):
        return _with_answer(_as_messages(record["messages"], where), record, where)

    def preference(self, record, where):
        if "chosen" not in record or "rejected" not in record:
            return super().preference(record, where)
        return {"prompt": _as_messages(record["messages"], where),
                "chosen": _answer(record["chosen"], where), "rejected": _answer(record["rejected"], where)}


class ShareGPTFormat(DataFormat):
    """ShareGPT: ``{"conversations": [{"from", "value"}], "system"?, "chosen"?, "rejected"?}``."""

    name, keys = "sharegpt", ("conversations",)

    def _turns(self, record, where):
        messages = _as_messages(record["conversations"], where)
        if record.get("system"):
            messages = [_msg("system", record["system"], where)] + messages
        return messages

    def conversation(self, record, where):
        return _with_answer(self._turns(record, where), record, where)

    def preference(self, record, where):
        if "chosen" not in record or "rejected" not in record:
            return super().preference(record, where)
        return {"prompt": self._turns(record, where),
                "chosen": _answer(record["chosen"], where), "rejected": _answer(record["rejected"], where)}


class AlpacaFormat(DataFormat):
    """Alpaca: ``{"instruction", "input"?, "output", "system"?, "history"?}``."""

    name, keys = "alpaca", ("instruction", "output")

    def conversation(self, record, where):
        messages = [_msg("system", record["system"], where)] if record.get("system") else []
        for pair in record.get("history") or []:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise DataError(f"{where}: history entries must be [user, assistant] pairs")
            messages += [_msg("user", pair[0], where), _msg("assistant", pair[1], where)]
        instruction = record["instruction"]
        if not isinstance(instruction, str):
            raise DataError(f"{where}: 'instruction' must be a string, got {type(instruction).__name__}")
        if record.get("input"):
            if not isinstance(record["input"], str):
                raise DataError(f"{where}: 'input' must be a string, got {type(record['input']).__name__}")
            instruction = f"{instruction}\n\n{record['input']}"
        messages += [_msg("user", instruction, where), _msg("assistant", record["output"], where, "output")]
        return messages


class PromptCompletionFormat(DataFormat):
    """``{"prompt", "completion"}`` or, for preferences, ``{"prompt", "chosen", "rejected"}``.

    ``prompt`` is a string (one user turn) or a list of messages; ``completion`` a string or messages.
    """

    name, keys = "prompt_completion", ("prompt",)

    def detect(self, record):
        return "prompt" in record and "messages" not in record and "conversations" not in record

    def _prompt(self, record, where):
        value = record["prompt"]
        return [_msg("user", value, where)] if isinstance(value, str) else _as_messages(value, where)

    def conversation(self, record, where):
        answer = "completion" if "completion" in record else "chosen" if "chosen" in record else None
        if answer is None:
            raise DataError(f"{where}: a prompt_completion record needs 'completion' (or 'chosen') for SFT")
        return self._prompt(record, where) + _answer(record[answer], where)

    def preference(self, record, where):
        if "chosen" not in record or "rejected" not in record:
            return super().preference(record, where)
        return {"prompt": self._prompt(record, where),
                "chosen": _answer(record["chosen"], where), "rejected": _answer(record["rejected"], where)}

    def prompt(self, record, where):
        return self._prompt(record, where)

    def text_pair(self, record, where) -> dict[str, str]:
        """Raw ``{"prompt": str, "completion": str}`` for continuation-style training (no chat template)."""
        pair = {key: record.get(key) for key in ("prompt", "completion")}
        for key, value in pair.items():
            if not isinstance(value, str):
                raise DataError(f"{where}: '{key}' must be a string for text prompt/completion, got "
                                f"{type(value).__name__}")
        return pair


    def text_preference(self, record, where) -> dict[str, str]:
        """Raw ``{"prompt", "chosen", "rejected"}`` strings, for a base model with no chat template."""
        pair = {key: record.get(key) for key in ("prompt", "chosen", "rejected")}
        for key, value in pair.items():
            if not isinstance(value, str):
                raise DataError(f"{where}: '{key}' must be a string for plain-text preferences, got "
                                f"{type(value).__name__} (a model without a chat template needs plain strings; "
                                "or set chat_template)")
        return pair


class DialogueFormat(DataFormat):
    """Whole dialogues in one string, HH-RLHF style: ``"\\n\\nHuman: …\\n\\nAssistant: …"``.

    For preferences, ``chosen`` and ``rejected`` share the dialogue up to the last assistant turn: that is
    the prompt; the two final answers are the pair. For SFT the ``chosen`` dialogue is the conversation.
    """

    name = "dialogue"

    def detect(self, record):
        for key in ("chosen", "text", "dialogue"):
            if isinstance(record.get(key), str) and "Human:" in record[key] and "Assistant:" in record[key]:
                return True
        return False

    @staticmethod
    def parse(text: str, where: str) -> Messages:
        parts = re.split(r"\n\n(Human|Assistant|System): ?", "\n\n" + text.lstrip("\n"))
        messages = [_msg(parts[i], parts[i + 1].strip(), where) for i in range(1, len(parts) - 1, 2)]
        if not messages:
            raise DataError(f"{where}: no 'Human:'/'Assistant:' turns found in the dialogue")
        return messages

    def conversation(self, record, where):
        key = next((k for k in ("text", "dialogue", "chosen") if isinstance(record.get(k), str)), None)
        if key is None:
            raise DataError(f"{where}: a dialogue record needs a string 'text', 'dialogue' or 'chosen'")
        return self.parse(record[key], where)

    def preference(self, record, where):
        for key in ("chosen", "rejected"):
            if not isinstance(record.get(key), str):
                raise DataError(f"{where}: '{key}' must be a dialogue string")
        chosen, rejected = self.parse(record["chosen"], where), self.parse(record["rejected"], where)
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            raise DataError(f"{where}: chosen and rejected must each end with an assistant turn")
        if chosen[:-1] != rejected[:-1]:
            raise DataError(f"{where}: chosen and rejected dialogues differ before their final answer")
        return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}


BUILTIN_FORMATS = (MessagesFormat, ShareGPTFormat, AlpacaFormat, PromptCompletionFormat, DialogueFormat)
