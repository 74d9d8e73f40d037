"""Data that cannot teach is refused before training, with the counts.

A preference set whose chosen and rejected sides are the same text gives DPO nothing to separate: the loss
sits at log 2 = 0.6931 with a gradient of ~1e-7, the run "succeeds" and the model is unchanged. An SFT set
whose prompts already fill ``max_length`` has no reply token left after truncation, so TRL drops every
example and fails minutes later (after tokenising everything) with ``num_samples=0``. Both are cheap to
see up front, so the aligners and the finetuner call these before building a trainer.
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import DataError

IDENTICAL_PAIRS_MAX_SHARE = 0.5  # above this share of identical pairs a set is refused, not just cleaned


def _side_text(side: Any) -> str:
    """A side of a pair as comparable text: a string, or a message list's contents."""
    if isinstance(side, list):
        return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                         for m in side)
    return str(side).strip()


def drop_identical_pairs(pairs: list[dict], source: str, max_share: float = IDENTICAL_PAIRS_MAX_SHARE,
                         where: str = "aligner") -> tuple[list[dict], int]:
    """Pairs whose ``chosen`` and ``rejected`` differ, and how many were identical.

    Refuses the whole set (one line with the counts) when all pairs, or more than ``max_share`` of them,
    are identical: that is a broken export, not a few duplicates.
    """
    kept = [p for p in pairs if _side_text(p.get("chosen")) != _side_text(p.get("rejected"))]
    identical = len(pairs) - len(kept)
    if pairs and (not kept or identical / len(pairs) > max_share):
        raise DataError(f"{source}: {identical} of {len(pairs)} preference pairs have identical chosen and rejected "
                        f"sides; there is nothing to prefer (at most {max_share:.0%} may be identical; they are "
                        f"dropped). Check how the pairs were exported")
    return kept, identical


def prompt_token_length(example: dict, tokenizer) -> int:
    """Tokens before the reply: the prompt of a prompt/completion row, or every turn before the last
    assistant turn of a conversation (with the generation prompt)."""
    if "messages" in example:
        messages = example["messages"]
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))
        if last == 0:
            return 0
        return len(tokenizer.apply_chat_template(messages[:last], tokenize=True, add_generation_prompt=True,
                                                 return_dict=False))
    prompt = example.get("prompt", "")
    if isinstance(prompt, str):
        return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return len(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False))


def refuse_no_reply_left(examples: list[dict], tokenizer, max_length: int, source: str,
                         where: str = "finetuner") -> int:
    """Fail in one line when truncation to ``max_length`` leaves no reply token in ANY example; returns
    how many examples lose their whole reply (TRL drops those)."""
    if not examples:
        raise DataError(f"{source}: no examples to train on")
    lengths = [prompt_token_length(e, tokenizer) for e in examples]
    cut = sum(1 for n in lengths if n >= max_length)
    if cut == len(examples):
        raise DataError(f"{source}: all {cut} examples have prompts of {min(lengths)} to {max(lengths)} tokens, "
                        f">= {where}.max_length={max_length}: truncation leaves no reply token to learn from; "
                        f"raise {where}.max_length or shorten the prompts")
    return cut
