"""The five built-in record shapes: OpenAI ``messages``, ShareGPT, alpaca, ``prompt``/``completion`` and whole
dialogues in one string (HH-RLHF). Each is a ``data_format`` plugin (registered by this package)."""

from __future__ import annotations

import re

from lmforge.errors import DataError
from lmforge.plugins.lib.formats.base import (
    DataFormat,
    Messages,
    _answer,
    _as_messages,
    _field,
    _is_empty,
    _msg,
    _pair,
    _with_answer,
    record_keys,
)


class MessagesFormat(DataFormat):
    """OpenAI style: ``{"messages": [{"role", "content"}, …]}`` (optionally ``chosen``/``rejected``)."""

    name, keys = "messages", ("messages",)
    needs = "a messages record needs 'messages' (a list of role/content messages)"

    def _turns(self, record, where):
        return _as_messages(_field(record, "messages", where, self.needs), where)

    def conversation(self, record, where):
        return _with_answer(self._turns(record, where), record, where)

    def preference(self, record, where):
        _pair(record, where)
        return {"prompt": self._turns(record, where),
                "chosen": _answer(record["chosen"], where), "rejected": _answer(record["rejected"], where)}


class ShareGPTFormat(DataFormat):
    """ShareGPT: ``{"conversations": [{"from", "value"}], "system"?, "chosen"?, "rejected"?}``."""

    name, keys = "sharegpt", ("conversations",)
    needs = "a sharegpt record needs 'conversations' (a list of from/value messages)"

    def _turns(self, record, where):
        messages = _as_messages(_field(record, "conversations", where, self.needs), where)
        if record.get("system") and not _is_empty(record["system"]):
            messages = [_msg("system", record["system"], where, "system")] + messages
        return messages

    def conversation(self, record, where):
        return _with_answer(self._turns(record, where), record, where)

    def preference(self, record, where):
        _pair(record, where)
        return {"prompt": self._turns(record, where),
                "chosen": _answer(record["chosen"], where), "rejected": _answer(record["rejected"], where)}


class AlpacaFormat(DataFormat):
    """Alpaca: ``{"instruction", "input"?, "output", "system"?, "history"?}``."""

    name, keys = "alpaca", ("instruction", "output")
    needs = "an alpaca record needs 'instruction' and 'output' (text)"

    def conversation(self, record, where):
        system = record.get("system")
        messages = [_msg("system", system, where, "system")] if system and not _is_empty(system) else []
        history = record.get("history")
        for pair in [] if _is_empty(history) else history or []:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise DataError(f"{where}: history entries must be [user, assistant] pairs")
            messages += [_msg("user", pair[0], where), _msg("assistant", pair[1], where)]
        instruction = _field(record, "instruction", where, self.needs, messages=False)
        extra = record.get("input")
        if extra and not _is_empty(extra):
            if not isinstance(extra, str):
                raise DataError(f"{where}: 'input' must be text, got {type(extra).__name__}; this record has "
                                f"{record_keys(record)}")
            instruction = f"{instruction}\n\n{extra}"
        output = _field(record, "output", where, self.needs, messages=False)
        messages += [_msg("user", instruction, where), _msg("assistant", output, where, "output")]
        return messages


class PromptCompletionFormat(DataFormat):
    """``{"prompt", "completion"}`` or, for preferences, ``{"prompt", "chosen", "rejected"}``.

    ``prompt`` is a string (one user turn) or a list of messages; ``completion`` a string or messages.
    """

    name, keys = "prompt_completion", ("prompt",)
    needs = "a prompt_completion record needs 'prompt' and 'completion' (text or messages)"

    def detect(self, record):
        return "prompt" in record and "messages" not in record and "conversations" not in record

    def _prompt(self, record, where):
        value = _field(record, "prompt", where, self.needs)
        return [_msg("user", value, where)] if isinstance(value, str) else _as_messages(value, where)

    def conversation(self, record, where):
        answer = "chosen" if "completion" not in record and "chosen" in record else "completion"
        needs = self.needs if answer == "completion" else ("a prompt_completion record without 'completion' "
                                                           "takes its answer from 'chosen' (text or messages)")
        prompt = self._prompt(record, where)
        return prompt + _answer(_field(record, answer, where, needs), where)

    def preference(self, record, where):
        _pair(record, where)
        return {"prompt": self._prompt(record, where),
                "chosen": _answer(record["chosen"], where), "rejected": _answer(record["rejected"], where)}

    def prompt(self, record, where):
        return self._prompt(record, where)

    def text_pair(self, record, where) -> dict[str, str]:
        """Raw ``{"prompt": str, "completion": str}`` for continuation-style training (no chat template)."""
        needs = "text prompt/completion needs 'prompt' and 'completion' as plain strings"
        return {key: _field(record, key, where, needs, messages=False) for key in ("prompt", "completion")}

    def text_preference(self, record, where) -> dict[str, str]:
        """Raw ``{"prompt", "chosen", "rejected"}`` strings, for a base model with no chat template."""
        needs = ("plain-text preferences need 'prompt', 'chosen' and 'rejected' as strings (a model without a "
                 "chat template reads no messages; or set chat_template)")
        keys = ("prompt", "chosen", "rejected")
        _pair(record, where, needs, messages=False, keys=keys)
        return {key: record[key] for key in keys}


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
            raise DataError(f"{where}: a dialogue record needs a string 'text', 'dialogue' or 'chosen'; this "
                            f"record has {record_keys(record)}")
        return self.parse(record[key], where)

    def preference(self, record, where):
        _pair(record, where, "a dialogue preference pair needs 'chosen' and 'rejected' dialogue strings",
              messages=False)
        chosen, rejected = self.parse(record["chosen"], where), self.parse(record["rejected"], where)
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            raise DataError(f"{where}: chosen and rejected must each end with an assistant turn")
        if chosen[:-1] != rejected[:-1]:
            raise DataError(f"{where}: chosen and rejected dialogues differ before their final answer")
        return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}


BUILTIN_FORMATS = (MessagesFormat, ShareGPTFormat, AlpacaFormat, PromptCompletionFormat, DialogueFormat)
