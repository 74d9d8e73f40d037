"""The report's "What the models answer" section: right / not sure / wrong per chat model with 95% intervals,
trained behaviours apart, the held-out facts each model knows as text and what it answers to them, each win rate
with what its judge learned from, and the answers side by side.

Built from what the ``answers`` and ``win_rate`` evaluators (stage_effects.py) left on disk, so it
reports on skipped stages too; it reaches the report through ``lmforge_report_sections``.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

from lmforge.plugins.evaluators.stage_effects import (
    ANSWERS_FILE,
    TAUGHT_FILE,
    VERDICTS,
    WIN_RATE_FILE,
    verdict,
    verdict_counts,
    wilson_interval,
)

STAGE_NUMBERS = (  # (manifest metric, label) shown per stage when present
    ("eval/answers/identity", "identity answered (greedy)"),
    ("eval/answers/ends_turn", "sampled answers that end their turn"),
    ("eval/answers/english", "answers in English (language ID)"),
    ("eval/answers/alpha_words", "words made of letters"),
    ("eval_loss", "validation loss"),
    ("bits_per_byte", "bits per byte"),
    ("eval/perplexity/bits_per_byte", "held-out bits per byte"),
    ("pairs", "preference pairs made from its own answers"),
    ("answered_right", "questions it answered right at least once"),
    ("unsure_chosen", "pairs that prefer \"I am not sure\""),
    ("eval_accuracy", "reward model accuracy on held-out prompts' pairs"),
    ("eval/reward_accuracy/accuracy", "reward model held-out accuracy"),
    ("eval/win_rate/score", "judge score"),
    ("eval/win_rate/baseline_score", "judge score of the input model"),
)


def _cell(text: str, width: int = 90) -> str:
    """Model text as one literal table cell (no markup can come out of it), shortened to ``width``."""
    from lmforge.plugins.report import escape_markdown

    text = " ".join(str(text).split())
    return escape_markdown(text if len(text) <= width else text[: width - 1] + "…")


def _share(count: int, n: int) -> str:
    """``count/n = share (95% CI low-high)`` with the Wilson interval."""
    if not n:
        return "–"
    low, high = wilson_interval(count, n)
    return f"{count}/{n} = {count / n:.2f} ({low:.2f}–{high:.2f})"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _win_rate_lines(run_dir: Path, manifests: dict[str, dict]) -> list[str]:
    """One line per win rate: the number, what its judge learned from, and whether that is independent."""
    lines = []
    for stage, manifest in manifests.items():
        value = (manifest.get("metrics") or {}).get("eval/win_rate/win_rate")
        if not isinstance(value, (int, float)):
            continue
        pairs = (manifest.get("metrics") or {}).get("eval/win_rate/pairs")
        judge = _read_json(run_dir / stage / WIN_RATE_FILE) or {}
        count = int(pairs) if isinstance(pairs, (int, float)) else "?"
        text = f"- **{stage}** beats its input model in {value:.2f} of {count} held-out answer pairs"
        if judge.get("kind") == "rule judge":
            text += f", judged by the rule judge (it learned nothing: it checks {judge['learned_from']})."
        elif judge:
            where = judge.get("learned_from") or "unknown pairs"
            if Path(where).is_relative_to(run_dir.resolve()):
                where = str(Path(where).relative_to(run_dir.resolve()))
            text += f", judged by the reward model `{judge.get('judge')}`, trained on `{_cell(where, 120)}`"
            if judge.get("independent") is False:
                text += (". **Not independent**: the judge and this model learned from the same preference pairs, "
                         "so this says how well the model fits those labels, not that its answers got better; "
                         "the right / not sure / wrong counts above are the independent measure.")
            elif judge.get("independent"):
                text += ", pairs this model did not train on."
            else:
                text += "; what this model trained on is unknown, so independence is not checked."
        else:
            text += " (judge unknown)."
        lines.append(text)
    return lines


def _answers_table(answers: dict[str, list[dict]], taught: dict[str, list[dict]] | None = None) -> list[str]:
    """Right / not sure / wrong per chat model on held-out prompts, trained behaviours right, and (when asked) the
    questions of its fine-tuning data answered right, with 95% CIs."""
    chat = {stage: rows for stage, rows in answers.items() if rows and rows[0].get("mode", "chat") == "chat"}
    if not chat:
        return []
    taught = taught or {}
    column = any(stage in taught for stage in chat)
    lines = ["| model | right (held out) | not sure | wrong | trained behaviours right |" +
             (" taught questions right |" if column else ""), "|---|---|---|---|---|" + ("---|" if column else "")]
    for stage, rows in chat.items():
        held = verdict_counts([r for r in rows if r.get("held_out", True)])
        trained = verdict_counts([r for r in rows if not r.get("held_out", True)])
        lines.append(f"| {stage} | " + " | ".join(_share(held[v], held["n"]) for v in VERDICTS) +
                     f" | {_share(trained['right'], trained['n'])} |")
        if column:
            counts = verdict_counts(taught.get(stage, []))
            lines[-1] += f" {_share(counts['right'], counts['n'])} |"
    return lines


def _known_lines(answers: dict[str, list[dict]]) -> list[str]:
    """Held-out facts each model completes as plain text and, for a chat model, what it answers when asked them:
    whether a model hedges (or gets wrong) what it knows, or only what it does not."""
    parts = []
    for stage, rows in answers.items():
        facts = [r for r in rows if r.get("held_out", True) and "known_as_text" in r]
        if not facts:
            continue
        known = [r for r in facts if r["known_as_text"]]
        text = f"{stage} {len(known)} of {len(facts)}"
        if rows[0].get("mode", "chat") == "chat" and known:
            counts = verdict_counts(known)
            text += f" (asked them: {counts['right']} right, {counts['not_sure']} not sure, {counts['wrong']} wrong)"
        parts.append(text)
    if not parts:
        return []
    return [("- **Known as text**: held-out facts each model completes as plain text (the reference up to its answer, "
             "continued greedily), whatever it answers when asked: " + "; ".join(parts) + "."), ""]


def _taught_lines(taught: dict[str, list[dict]], examples: int = 3) -> list[str]:
    """What each chat model kept of what fine-tuning taught: the same taught questions before and after, the right
    answers lost (to "not sure" or to a wrong answer) and gained."""
    lines = []
    for before, after in itertools.pairwise(taught):
        pairs = [(verdict(a), verdict(b), a, b) for a, b in zip(taught[before], taught[after])
                 if a["prompt"] == b["prompt"]]
        if not pairs:
            continue
        lost = Counter(then for first, then, _, _ in pairs if first == "right" != then)
        gained = sum(first != "right" == then for first, then, _, _ in pairs)
        shown = "; ".join([f"*{_cell(a['prompt'], 50)}* {_cell(a['answer'], 50)} → {_cell(b['answer'], 50)}"
                           for first, then, a, b in pairs if first == "right" != then][:examples])
        right_before = sum(first == "right" for first, _, _, _ in pairs)
        right_after = sum(then == "right" for _, then, _, _ in pairs)
        lines.append(f"- **{after}** on {len(pairs)} questions of the fine-tuning data: "
                     f"right {right_before} → {right_after}; "
                     f"of {before}'s right answers {lost['not_sure']} became \"not sure\" and {lost['wrong']} wrong, "
                     f"{gained} gained" + (f" (e.g. {shown})" if shown else "") + ".")
    return lines + [""] if lines else []


def _change_lines(answers: dict[str, list[dict]], examples: int = 5) -> list[str]:
    """What each chat model did to its predecessor's held-out answers, prompt by prompt: a table of verdict before
    x verdict after, and the prompts whose right answer was lost or gained (a count of right answers can stay
    the same while different questions are answered right)."""
    chat = [stage for stage, rows in answers.items() if rows and rows[0].get("mode", "chat") == "chat"]
    labels = {"right": "right", "not_sure": "not sure", "wrong": "wrong"}
    lines = []
    for before, after in itertools.pairwise(chat):
        pairs = [(verdict(a), verdict(b), a, b) for a, b in zip(answers[before], answers[after])
                 if a.get("held_out", True) and a["prompt"] == b["prompt"] and verdict(a) and verdict(b)]
        if not pairs:
            continue
        moves = Counter((first, then) for first, then, _, _ in pairs)
        lines += [(f"What **{after}** did to **{before}**'s held-out answers (rows: {before}, columns: {after}; "
                   f"{len(pairs)} prompts):"), "",
                  f"| {before} \\ {after} | " + " | ".join(labels[v] for v in VERDICTS) + " |",
                  "|---" * (len(VERDICTS) + 1) + "|"]
        lines += [f"| {labels[first]} | " + " | ".join(str(moves[first, then]) for then in VERDICTS) + " |"
                  for first in VERDICTS]
        lines.append("")
        lost = [(a, b) for first, then, a, b in pairs if first == "right" != then]
        gained = [(a, b) for first, then, a, b in pairs if first != "right" == then]
        for name, items in (("right answers lost", lost), ("right answers gained", gained)):
            if items:
                shown = "; ".join(f"*{_cell(a['prompt'], 50)}* {_cell(a['answer'], 50)} → {_cell(b['answer'], 50)}"
                                  for a, b in items[:examples])
                more = f" (and {len(items) - examples} more)" if len(items) > examples else ""
                lines.append(f"- {name}: {len(items)}: {shown}{more}")
        lines.append("")
    return lines


def markdown_section(run_dir, manifests: dict[str, dict], max_prompts: int = 8) -> str:
    """The report section: first what each chat model answers (right / not sure / wrong on held-out prompts, the
    win rates with their judges), then per stage the numbers that say it worked, then the answers side by side."""
    from lmforge.plugins.report import format_number

    run_dir = Path(run_dir)
    lines = []
    numbers = []
    for stage, manifest in manifests.items():
        metrics = manifest.get("metrics") or {}
        for key, label in STAGE_NUMBERS:
            value = metrics.get(key)
            if isinstance(value, (int, float)):  # a count as "1,137", other numbers to 3 significant digits
                numbers.append(f"| {stage} | {label} | {format_number(value, '.3g')} |")
    def rows(stages, name: str) -> dict[str, list[dict]]:
        return {stage: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
                for stage in stages if (path := run_dir / stage / name).is_file()}

    answers = rows(manifests, ANSWERS_FILE)
    taught = rows(answers, TAUGHT_FILE)
    table, win_rates = _answers_table(answers, taught), _win_rate_lines(run_dir, manifests)
    if table or win_rates:
        intro = ("Greedy answers to the evaluation prompts. *Held out*: every prompt not marked `held_out: false` "
                 "(the bundled ones ask facts that no fine-tuning chat, preference question or pair asks, in any "
                 "phrasing or operand order). *Trained behaviours* (`held_out: false`: identity, small talk) are "
                 "asked in training too and counted apart. *Taught questions*: questions of the fine-tuning data, "
                 "asked to see what later stages keep of what it taught. Each cell: count/n = share (95% Wilson "
                 "interval).")
        lines += ["## What the models answer", "", intro, ""]
        lines += table + [""] if table else []
        lines += _known_lines(answers)
        lines += win_rates + [""] if win_rates else []
        lines += _change_lines(answers) + _taught_lines(taught)
    if numbers or answers:
        lines += ["## What each stage did", ""]
    if numbers:
        lines += ["| stage | measure | value |", "|---|---|---|", *numbers, ""]
    if answers:
        stages = list(answers)
        first = answers[stages[0]]
        shown = [i for i, r in enumerate(first) if not r.get("held_out", True)] + \
            [i for i, r in enumerate(first) if r.get("held_out", True)][:max_prompts]
        lines += [("Greedy answers side by side (*trained* marks a trained behaviour, the rest are held out); the "
                   "base model continues the text as is."), "",
                  "| prompt | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
        for index in shown:
            row = first[index]
            cells = [_cell(row["prompt"], 60) + ("" if row.get("held_out", True) else " *(trained)*")]
            for stage in stages:
                rows = answers[stage]
                cells.append(_cell(rows[index]["answer"]) if index < len(rows) else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n" if lines else ""
