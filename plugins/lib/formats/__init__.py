"""Data formats: how SFT, preference and prompt records in the wild become chat messages.

Users bring alpaca (instruction/input/output), ShareGPT (conversations of from/value), OpenAI
``messages``, ``prompt``/``completion`` and whole dialogues in one string
("\\n\\nHuman: … \\n\\nAssistant: …", as in HH-RLHF). Each is a ``data_format`` plugin; stages call
:func:`load_conversations`, :func:`load_preferences`, :func:`load_prompts` or
:func:`load_prompt_completions`, which auto-detect the format (or take it by name) and name the file
and record index of anything malformed.

Auto-detection looks at each of the file's first :data:`DETECT_SAMPLE` records and keeps the formats
that fit all of them: exactly one left is the format; none (records of different shapes) or several (a
record that fits two shapes) is a one-line error that names the file and record and asks for ``format=``.
Files whose keys differ from a format's (``question``/``answer``, say) are read with a ``columns`` map that
renames keys before detection: ``{"question": "prompt", "answer": "completion"}``.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from lmforge import hookimpl, registry
from lmforge.errors import DataError, close_match
from lmforge.plugins.lib.data import Record, is_text_only, read_rows

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "model": "assistant", "bot": "assistant", "chatbot": "assistant", "system": "system"}
DETECT_SAMPLE = 200  # records looked at by auto-detection
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")

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


@hookimpl
def lmforge_register(registry):
    for cls in BUILTIN_FORMATS:
        registry.add("data_format", cls.name, cls)


def detect_format(record: dict, where: str, wanted: str = "auto") -> DataFormat:
    """The format of one record (or the one named by ``wanted``); ambiguous / unknown records are errors."""
    return _detect([(where, record)], where, wanted)


def _detect(samples: list[tuple[str, dict]], source: str, wanted: str = "auto") -> DataFormat:
    reg = registry()
    if wanted != "auto":
        return reg.get("data_format", wanted)()
    formats = [reg.get("data_format", name)() for name in reg.names("data_format")]
    candidates = list(formats)
    for where, record in samples:
        matches = [f for f in formats if f.detect(record)]
        keys = ", ".join(sorted(record)) or "(none)"
        if not matches:
            raise DataError(f"{where}: unrecognised record (keys: {keys}); known formats: "
                            f"{', '.join(f.name for f in formats)}; set the stage's format= (or columns= to "
                            "rename keys)")
        remaining = [f for f in candidates if f.name in {m.name for m in matches}]
        if not remaining:
            first = ", ".join(c.name for c in candidates)
            raise DataError(f"{where}: mixed formats: this record (keys: {keys}) is "
                            f"{' or '.join(m.name for m in matches)}, earlier records are {first}; "
                            "one file must hold one format")
        candidates = remaining
    if len(candidates) > 1:
        where, record = samples[0]
        keys = ", ".join(sorted(record)) or "(none)"
        raise DataError(f"{where}: ambiguous records (keys: {keys}) fit formats "
                        f"{', '.join(f.name for f in candidates)}; set the stage's format= to one of them")
    return candidates[0]


def _rename(rows: list[Record], columns: dict[str, str] | None) -> list[Record]:
    if not columns:
        return rows
    renamed = []
    targets = set(columns.values())
    for row in rows:
        missing = [source for source in columns if source not in row.fields]
        if missing:
            raise DataError(f"{row.where} has no '{missing[0]}' (named in columns); keys: "
                            f"{', '.join(sorted(row.fields))}")
        fields = {key: value for key, value in row.fields.items() if key not in targets or key in columns}
        renamed.append(Record(row.where, {columns.get(key, key): value for key, value in fields.items()},
                              row.origin))
    return renamed


def _read(source, fmt: str, columns: dict[str, str] | None) -> tuple[DataFormat, list[tuple[DataFormat, Record]]]:
    """Rows with the format of each: detected per file (a mixture may join files of different formats)."""
    rows = _rename(read_rows(source), columns)
    groups: dict[str, list[Record]] = {}
    for row in rows:
        groups.setdefault(row.origin, []).append(row)
    adapters = {}
    for origin, members in groups.items():
        samples = [(row.where, row.fields) for row in members[:DETECT_SAMPLE]]
        adapters[origin] = _detect(samples, origin or str(source), fmt)
    return adapters[rows[0].origin], [(adapters[row.origin], row) for row in rows]


def read_format(source, fmt: str = "auto",
                columns: dict[str, str] | None = None) -> tuple[DataFormat, list[dict]]:
    """The records of a data input (keys renamed by ``columns``) and the format adapter that reads them.

    ``source`` is any data input :mod:`lmforge.plugins.lib.data` reads: a file, glob, directory, saved or Hub
    dataset, or a mixture."""
    adapter, rows = _read(source, fmt, columns)
    return adapter, [row.fields for _, row in rows]


def _convert(source, adapter: DataFormat, rows: list[tuple[DataFormat, Record]], method: str,
             skip_negative: bool = False, skip_invalid: bool = False, check=None) -> list:
    """``adapter.<method>(record, where)`` over the rows (each with its file's format), then ``check``; with
    ``skip_invalid`` a bad record is skipped and counted (one warning naming the first) instead of stopping."""
    out, skipped = [], []
    for row_adapter, row in rows:
        if skip_negative and _is_negative(row.fields):
            continue
        try:
            converted = getattr(row_adapter, method)(row.fields, row.where)
            if check is not None:
                check(converted, row.where)
            out.append(converted)
        except DataError as exc:
            if not skip_invalid:
                raise
            skipped.append(str(exc))
    if skipped:
        warnings.warn(f"{source}: skipped {len(skipped)} malformed record(s) of {len(rows)}; "
                      f"first: {skipped[0]}", stacklevel=3)
    if not out:
        raise DataError(f"{source}: no usable records ({adapter.name} format)")
    return out


def _load(source, fmt: str, method: str, columns: dict[str, str] | None = None,
          skip_invalid: bool = False) -> list:
    if method == "prompt" and is_text_only(source):  # .txt prompts: one a line
        rows = read_rows(source, text_field="text", txt_mode="line")
        return [[{"role": "user", "content": row.fields["text"].strip()}] for row in rows]
    adapter, rows = _read(source, fmt, columns)
    return _convert(source, adapter, rows, method, skip_invalid=skip_invalid)


def _check_conversation(conversation: Messages, where: str) -> None:
    for position, message in enumerate(conversation):
        if message["role"] == "system" and position != 0:
            raise DataError(f"{where}: a system message is only allowed first (found at message {position})")
    if not any(m["role"] == "assistant" for m in conversation):
        raise DataError(f"{where}: no assistant turn, so nothing to learn from")


def personalise(conversations: list[Messages], system_prompt: str | None = None,
                placeholders: dict[str, str] | None = None, source: str = "") -> list[Messages]:
    """Add ``system_prompt`` where a conversation has no system turn; fill ``{{key}}`` from ``placeholders``.

    Works on any list of message lists (and on the ``prompt``/``completion`` lists of a pair). Placeholders
    left unfilled (``{{name}}`` with no ``name`` configured) are reported once as a warning.
    """
    placeholders = {k: str(v) for k, v in (placeholders or {}).items()}
    out = []
    unfilled: dict[str, int] = {}
    for conversation in conversations:
        conversation = [dict(m) for m in conversation]
        if system_prompt and conversation and conversation[0]["role"] != "system":
            conversation = [{"role": "system", "content": system_prompt}] + conversation
        for message in conversation:
            message["content"] = PLACEHOLDER.sub(lambda m: placeholders.get(m.group(1), m.group(0)),
                                                 message["content"])
            for name in PLACEHOLDER.findall(message["content"]):
                unfilled[name] = unfilled.get(name, 0) + 1
        out.append(conversation)
    if unfilled:
        names = ", ".join(f"{{{{{k}}}}} ({n}x)" for k, n in sorted(unfilled.items()))
        warnings.warn(f"{source or 'data'}: unfilled placeholders {names}; set placeholders.<name> to fill "
                      "them", stacklevel=2)
    return out


def _is_negative(record: dict) -> bool:
    return record.get("label") is False


def load_conversations(path, fmt: str = "auto", system_prompt: str | None = None,
                       placeholders: dict[str, str] | None = None, columns: dict[str, str] | None = None,
                       skip_negative: bool = False, skip_invalid: bool = False) -> list[Messages]:
    """SFT conversations; ``system_prompt`` is added where a conversation has none; ``{{key}}`` filled in.

    Each conversation must hold an assistant turn (a system turn only first); preference records contribute
    their prompt plus the ``chosen`` answer. ``skip_negative`` drops records labelled ``"label": false``
    (KTO-style examples of what not to say); ``skip_invalid`` skips malformed records with a warning.
    """
    adapter, rows = _read(path, fmt, columns)
    conversations = _convert(path, adapter, rows, "conversation", skip_negative, skip_invalid,
                             check=_check_conversation)
    return personalise(conversations, system_prompt, placeholders, str(path))


def load_prompt_completions(path, fmt: str = "auto", system_prompt: str | None = None,
                            placeholders: dict[str, str] | None = None, columns: dict[str, str] | None = None,
                            skip_negative: bool = False, text: bool = False,
                            skip_invalid: bool = False) -> list[dict[str, Any]]:
    """``{"prompt": messages, "completion": messages}`` pairs (the last assistant turn is the completion).

    With ``text=True`` the ``prompt_completion`` format's raw strings are kept (no chat roles, no system
    prompt) for continuation-style training.
    """
    adapter, rows = _read(path, fmt, columns)
    if text:
        other = next(((a, row) for a, row in rows if not isinstance(a, PromptCompletionFormat)), None)
        if other is not None:
            raise DataError(f"{other[1].origin or path}: text prompt/completion needs the prompt_completion "
                            f"format, the file is {other[0].name}")
    pairs = _convert(path, adapter, rows, "text_pair" if text else "prompt_completion", skip_negative, skip_invalid)
    if text:
        filled = personalise([[{"role": "user", "content": p["prompt"]}, {"role": "assistant",
                                                                          "content": p["completion"]}]
                              for p in pairs], None, placeholders, str(path))
        return [{"prompt": c[0]["content"], "completion": c[1]["content"]} for c in filled]
    prompts = personalise([p["prompt"] for p in pairs], system_prompt, placeholders, str(path))
    completions = personalise([p["completion"] for p in pairs], None, placeholders, str(path))
    return [{"prompt": p, "completion": c} for p, c in zip(prompts, completions)]


def load_preferences(path, fmt: str = "auto", columns: dict[str, str] | None = None,
                     skip_invalid: bool = False, text: bool = False) -> list[dict[str, Any]]:
    """Preference pairs as ``{"prompt", "chosen", "rejected"}`` message lists.

    ``skip_invalid`` skips malformed pairs with one warning (5 of HH-RLHF's 2,312 harmless-test pairs have
    chosen and rejected dialogues that differ before the final answer). ``text=True`` keeps the
    ``prompt_completion`` format's plain strings (no chat roles) for a base model without a chat template."""
    if text:
        adapter, rows = _read(path, fmt, columns)
        other = next(((a, row) for a, row in rows if not isinstance(a, PromptCompletionFormat)), None)
        if other is not None:
            raise DataError(f"{other[1].origin or path}: the model has no chat template, so preferences must be "
                            f"plain prompt/chosen/rejected strings; the file is {other[0].name} (or set "
                            "chat_template=chatml)")
        return _convert(path, adapter, rows, "text_preference", False, skip_invalid)
    return _load(path, fmt, "preference", columns, skip_invalid)


def preferences_for(tokenizer, path, fmt: str = "auto", columns: dict[str, str] | None = None,
                    skip_invalid: bool = False) -> list[dict[str, Any]]:
    """Preference pairs in the shape ``tokenizer`` can train on: message lists when it has a chat template,
    plain strings (TRL's standard, non-conversational DPO/ORPO data) when it has none."""
    return load_preferences(path, fmt, columns, skip_invalid, text=not getattr(tokenizer, "chat_template", None))


def load_prompts(path, fmt: str = "auto", columns: dict[str, str] | None = None,
                 skip_invalid: bool = False) -> list[Messages]:
    """Prompts as message lists (the conversation up to its last user turn); .txt: one prompt a line."""
    return _load(path, fmt, "prompt", columns, skip_invalid)
