"""Data that cannot teach is refused before training, with the counts.

A preference set whose chosen and rejected sides are the same text gives DPO nothing to separate: the loss
sits at log 2 = 0.6931 with a gradient of ~1e-7, the run "succeeds" and the model is unchanged. It is cheap
to see before building a trainer, so the pairwise aligners (dpo, orpo, reward_model) call
:func:`drop_identical_pairs` on the pairs they load. (SFT data whose replies cannot fit ``max_length`` is
refused by the finetuner's own truncation step, ``sft.keep_last_reply`` / ``drop_too_long``.)
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
