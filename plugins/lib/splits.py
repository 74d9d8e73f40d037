"""Held-out splits that keep every row of one prompt on one side (SFT validation, DPO/ORPO/KTO, the reward model).

A random split of rows puts the same question on both sides (one prompt, several pairs), and the held-out
number then measures recall; here rows are grouped by their normalised prompt and whole groups go to
one side, chosen by a seeded hash so the split does not depend on row order.
"""

from __future__ import annotations

import hashlib

from lmforge.errors import DataError
from lmforge.plugins.lib.overlap import words


def normalised_prompt(text: str) -> str:
    """A prompt as the held-out split compares it: the overlap check's normalisation (``lib.overlap.words``:
    the cleaner's lower case, punctuation and diacritics out, and one order for the operands of a sum or a
    product), so "What is 3 + 1?" and "what is 1 plus 3" are one prompt here as there."""
    return " ".join(words(text, commutative=True))


def prompt_of(row: dict) -> str:
    """The prompt of one training row: the user turns of a conversation or of a pair's ``prompt`` (chat and
    preference data), a plain ``prompt`` string, else the row's ``text``."""
    value = row.get("prompt", row.get("messages"))
    if isinstance(value, list):
        return "\n".join(m.get("content") or "" for m in value if isinstance(m, dict) and m.get("role") == "user")
    if isinstance(value, str):
        return value
    return str(row.get("text", ""))


def split_heldout(dataset, fraction: float, seed: int, source):
    """(train, held-out) of a ``datasets.Dataset``, held-out None at 0; every row of one prompt on one side.

    Rows are grouped by their :func:`normalised_prompt` (the question of an SFT chat, the prompt of a preference
    pair: a pair's chosen and rejected answers, or a prompt asked twice, never straddle the split, so held-out
    accuracy measures prompts the model did not train on). Groups are ordered by a seeded hash of their prompt
    and held out in that order until ``fraction`` of the rows is reached: the same data and seed always give the
    same split, whatever the row order."""
    if fraction <= 0:
        return dataset, None
    if len(dataset) < 2:
        raise DataError(f"{source}: {len(dataset)} example(s); too few to hold out an eval split "
                        "(eval_fraction)")
    columns = [c for c in ("prompt", "messages", "text") if c in dataset.column_names]
    rows = [dict(zip(columns, values)) for values in zip(*(dataset[c] for c in columns))] if columns else \
        [{"text": str(i)} for i in range(len(dataset))]
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(normalised_prompt(prompt_of(row)), []).append(index)
    if len(groups) < 2:
        raise DataError(f"{source}: all {len(dataset)} examples share one prompt; too few prompts to hold out an "
                        "eval split (eval_fraction)")

    def rank(key: str) -> bytes:
        return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()

    target, held = max(1, round(fraction * len(dataset))), []
    for key in sorted(groups, key=rank)[:-1]:  # the last group always trains
        if len(held) >= target:
            break
        held += groups[key]
    held_set = set(held)
    return (dataset.select([i for i in range(len(dataset)) if i not in held_set]), dataset.select(sorted(held)))
