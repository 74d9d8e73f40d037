"""The loaders stages call: SFT conversations, prompt/completion pairs, preference pairs and prompts, each
read through the file's format, checked, and personalised (system prompt, ``{{key}}`` placeholders)."""

from __future__ import annotations

import re
import warnings
from typing import Any

from lmforge.errors import DataError
from lmforge.plugins.lib.data import Record, is_text_only, read_rows
from lmforge.plugins.lib.formats.base import DataFormat, Messages
from lmforge.plugins.lib.formats.builtin import PromptCompletionFormat
from lmforge.plugins.lib.formats.detection import _read

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


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
