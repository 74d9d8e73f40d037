"""Ranking in the terminal (``lmforge rank --terminal``): candidates printed, a ranking typed per prompt."""

from __future__ import annotations

from lmforge.errors import DataError
from lmforge.plugins.rank.session import RankSession

TERMINAL_HELP = ("order best first, e.g. '2 1 3 4'; '=' joins a tie ('2=1 3 4'); unnamed ones go last, tied; "
                 "'s' skips, 'q' quits")


def parse_terminal_ranking(line: str, count: int) -> list[list[int]]:
    """'2=1 3' over 4 candidates (shown 1-based) -> [[1, 0], [2], [3]] (0-based ids, leftovers last)."""
    groups, seen = [], set()
    for token in line.replace(",", " ").split():
        group = []
        for part in token.split("="):
            if not part.isdigit() or not 1 <= int(part) <= count:
                raise DataError(f"'{part}' is not a candidate number 1..{count}")
            candidate = int(part) - 1
            if candidate in seen:
                raise DataError(f"candidate {part} named twice")
            seen.add(candidate)
            group.append(candidate)
        groups.append(group)
    rest = [c for c in range(count) if c not in seen]
    if not groups:
        raise DataError("empty ranking")
    return groups + ([rest] if rest else [])


def rank_in_terminal(session: RankSession, annotator: str, read=input, write=print) -> int:
    """Rank every prompt this annotator has not judged yet; returns how many were judged now."""
    done = set(session.judgements().get(annotator, {}))
    todo = [p for p in session.prompts if p["prompt_id"] not in done]
    write(f"{len(done)}/{len(session.prompts)} judged by {annotator}; {len(todo)} to go. {TERMINAL_HELP}")
    judged = 0
    for number, prompt in enumerate(todo, 1):
        write(f"\n=== prompt {prompt['prompt_id'] + 1} ({number}/{len(todo)}) ===")
        for message in prompt["prompt"]:
            write(f"[{message['role']}] {message['content']}")
        for candidate in prompt["candidates"]:
            write(f"\n--- {candidate['id'] + 1} ---\n{candidate['text']}")
        while True:
            try:
                line = read("\nranking> ").strip()
            except EOFError:
                return judged
            if line.lower() == "q":
                return judged
            if line.lower() == "s":
                session.record(annotator, prompt["prompt_id"], skipped=True)
                break
            try:
                ranking = parse_terminal_ranking(line, len(prompt["candidates"]))
            except DataError as exc:
                write(f"  {exc}; {TERMINAL_HELP}")
                continue
            session.record(annotator, prompt["prompt_id"], ranking)
            judged += 1
            break
    return judged
