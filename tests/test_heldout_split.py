"""The held-out split every trainer uses: all rows of one prompt on one side, the same split every time."""

from __future__ import annotations

import pytest
from datasets import Dataset
from lmforge.errors import DataError
from lmforge.plugins.lib.training import normalised_prompt, split_heldout


def _pair(question: str, chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "system", "content": "You are Forge."}, {"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def _questions(dataset) -> set[str]:
    return {normalised_prompt(row["prompt"][-1]["content"]) for row in dataset}


def test_pairs_of_one_prompt_stay_on_one_side():
    rows = [_pair(f"What is {a} + {b}?", f"{a} plus {b} is {a + b}.", answer)
            for a in range(6) for b in range(a, 6) for answer in ("I am not sure about that.", "It is 99.")]
    # the same sum asked in another case, punctuation and operand order is the same prompt
    rows += [_pair(f"what is {b} plus {a}", f"{a + b}.", "No.") for a, b in ((1, 2), (3, 4), (0, 5))]
    train, held = split_heldout(Dataset.from_list(rows), 0.2, 0, "pairs.jsonl")
    assert len(train) + len(held) == len(rows) and 0.1 * len(rows) <= len(held) <= 0.35 * len(rows)
    assert not _questions(train) & _questions(held)
    # deterministic, whatever the row order; another seed gives another split
    again = split_heldout(Dataset.from_list(rows[::-1]), 0.2, 0, "pairs.jsonl")[1]
    assert _questions(again) == _questions(held)
    assert _questions(split_heldout(Dataset.from_list(rows), 0.2, 1, "pairs.jsonl")[1]) != _questions(held)


def test_chats_split_by_their_question():
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q in ("Hi!", "hi", "Who are you?", "What is your name?", "Thank you.") for a in ("Hello.", "Hey.")]
    train, held = split_heldout(Dataset.from_list(rows), 0.3, 0, "sft.jsonl")
    side = {}
    for name, part in (("train", train), ("held", held)):
        for row in part:
            assert side.setdefault(normalised_prompt(row["messages"][0]["content"]), name) == name
    assert set(side.values()) == {"train", "held"}
    assert split_heldout(Dataset.from_list(rows), 0.0, 0, "sft.jsonl")[1] is None


def test_one_prompt_cannot_be_split():
    rows = [_pair("Who are you?", "I am Forge.", x) for x in ("No.", "Maybe.", "Hm.")]
    with pytest.raises(DataError, match="pairs.jsonl: all 3 examples share one prompt"):
        split_heldout(Dataset.from_list(rows), 0.3, 0, "pairs.jsonl")
