"""What rankings imply: preference pairs (the export) and agreement between annotators.

Kendall's tau-b and pairwise agreement over the candidate pairs both annotators ranked are computed here in a
few lines, not with scipy: it is ten lines of counting and scipy would be a 40 MB dependency for them.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, DataError
from lmforge.plugins.rank.session import RankSession, _write_atomic

EXPORT_MODES = ("all_pairs", "best_vs_worst")


def positions(ranking: list[list[int]]) -> dict[int, int]:
    return {candidate: level for level, group in enumerate(ranking) for candidate in group}


def implied_pairs(ranking: list[list[int]], mode: str = "all_pairs") -> list[tuple[int, int]]:
    """(better, worse) candidate pairs a ranking implies; ties imply none."""
    if mode not in EXPORT_MODES:
        raise ConfigError(f"mode: '{mode}' is not one of {', '.join(EXPORT_MODES)}")
    if mode == "best_vs_worst":
        if len(ranking) < 2:
            return []
        return [(a, b) for a in ranking[0] for b in ranking[-1]]
    return [(a, b) for i, better in enumerate(ranking) for worse in ranking[i + 1:] for a in better for b in worse]


def merge_identical(ranking: list[list[int]], texts: dict[int, str]) -> list[list[int]]:
    """The ranking with candidates of one text as one candidate: the lowest id of that text, at the best rank
    any of them got (a text cannot be preferred over itself, nor over another text and under it at once)."""
    canonical: dict[str, int] = {}
    for candidate in sorted(texts):
        canonical.setdefault(texts[candidate], candidate)
    merged, placed = [], set()
    for group in ranking:
        kept = []
        for candidate in group:
            one = canonical.get(texts.get(candidate), candidate)
            if one not in placed:
                placed.add(one)
                kept.append(one)
        if kept:
            merged.append(kept)
    return merged


def pair_agreement(first: list[list[int]], second: list[list[int]]) -> tuple[float, float]:
    """Pairwise agreement (share of candidate pairs ordered alike, ties as their own verdict) and Kendall tau-b."""
    pos_a, pos_b = positions(first), positions(second)
    same = concordant = discordant = untied_a = untied_b = total = 0
    for i, j in itertools.combinations(sorted(pos_a), 2):
        sign_a = (pos_a[i] > pos_a[j]) - (pos_a[i] < pos_a[j])
        sign_b = (pos_b[i] > pos_b[j]) - (pos_b[i] < pos_b[j])
        total += 1
        same += sign_a == sign_b
        concordant += sign_a * sign_b > 0
        discordant += sign_a * sign_b < 0
        untied_a += sign_a != 0
        untied_b += sign_b != 0
    tau = (concordant - discordant) / math.sqrt(untied_a * untied_b) if untied_a and untied_b else math.nan
    return (same / total if total else math.nan), tau


def agreement(session: RankSession, annotators: list[str] | None = None) -> dict[str, Any]:
    """Agreement for every pair of annotators over the prompts both ranked (skips left out)."""
    rankings = session.rankings(annotators)
    report: dict[str, Any] = {"annotators": {name: len(r) for name, r in sorted(rankings.items())}, "pairs": []}
    for a, b in itertools.combinations(sorted(rankings), 2):
        shared = sorted(set(rankings[a]) & set(rankings[b]))
        scores = [pair_agreement(rankings[a][pid], rankings[b][pid]) for pid in shared]
        agreements = [s[0] for s in scores if not math.isnan(s[0])]
        taus = [s[1] for s in scores if not math.isnan(s[1])]
        report["pairs"].append({
            "annotators": [a, b], "shared_prompts": len(shared),
            "pairwise_agreement": sum(agreements) / len(agreements) if agreements else None,
            "kendall_tau": sum(taus) / len(taus) if taus else None})
    return report


def export_preferences(session: RankSession, out_path: str | Path, mode: str = "all_pairs",
                       annotators: list[str] | None = None) -> dict[str, Any]:
    """Write pairwise preferences (``load_preferences`` format) and return counts.

    Each annotator's ranking votes for the pairs it implies; a pair is exported once, in the direction with
    more votes (pairs the annotators split evenly on are dropped and counted as ``conflicts``). Candidates
    with identical texts count as one (:func:`merge_identical`: the lowest id, at its best rank), so no pair
    has the same chosen and rejected text and no ranking says A > B and B > A through two copies of a text;
    ``identical_dropped`` counts the candidate pairs left out for naming such a copy.
    """
    rankings = session.rankings(annotators)
    rows, conflicts, identical = [], 0, 0
    for prompt in session.prompts:
        pid = prompt["prompt_id"]
        votes: dict[tuple[int, int], int] = {}
        voters: dict[tuple[int, int], list[str]] = {}
        texts = {c["id"]: c["text"] for c in prompt["candidates"]}
        left_out: set[frozenset[int]] = set()
        for annotator in sorted(rankings):
            if pid not in rankings[annotator]:
                continue
            ranking = rankings[annotator][pid]
            merged = implied_pairs(merge_identical(ranking, texts), mode)
            left_out |= {frozenset(pair) for pair in implied_pairs(ranking, mode)} - {frozenset(p) for p in merged}
            for better, worse in merged:
                votes[(better, worse)] = votes.get((better, worse), 0) + 1
                voters.setdefault((better, worse), []).append(annotator)
        identical += len(left_out)
        for (better, worse), count in sorted(votes.items()):
            against = votes.get((worse, better), 0)
            if count < against or (count == against and better > worse):
                continue
            if count == against:
                conflicts += 1
                continue
            rows.append({"prompt": prompt["prompt"], "chosen": texts[better], "rejected": texts[worse],
                         "prompt_id": pid, "chosen_id": better, "rejected_id": worse,
                         "votes": count, "votes_against": against, "annotators": voters[(better, worse)]})
    if not rows:
        raise DataError(f"{session.directory}: no preference pairs to export ({sum(map(len, rankings.values()))} "
                        f"rankings; {identical} pairs of identical texts and {conflicts} split pairs dropped)")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"path": str(out_path), "pairs": len(rows), "mode": mode, "conflicts_dropped": conflicts,
            "identical_dropped": identical, "prompts": len({r["prompt_id"] for r in rows})}
