"""The last lines of a run: what the final chat model does on held-out prompts, the report, the next command."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lmforge.plugins.console.layout import CHAT_MODEL_KINDS, CLOSING_WIDTH, PREFIX, fold


def chat_model_stage(run_dir: Path, manifests: dict[str, dict]) -> str | None:
    """The last stage whose artifact is a chat model (a fine-tuned or aligned causal LM), else None."""
    for name in reversed(list(manifests)):
        if manifests[name].get("kind") not in CHAT_MODEL_KINDS:
            continue
        config = Path(run_dir) / name / "config.json"
        try:
            architectures = json.loads(config.read_text()).get("architectures") or []
        except (OSError, ValueError):
            continue
        if any(str(a).endswith("ForCausalLM") for a in architectures):
            return name
    return None


def held_out_summary(metrics: dict) -> str | None:
    """What a model does on the held-out prompts, from the ``answers`` evaluator's metrics in its manifest:
    right / not sure / wrong (counts where they were recorded, else shares) and how often it ends its turn."""
    prefix = "eval/answers/"
    answers = {k[len(prefix):]: v for k, v in metrics.items()
               if k.startswith(prefix) and isinstance(v, (int, float)) and not isinstance(v, bool)}
    n = answers.get("n") or answers.get("prompts")
    parts = []
    if "right" in answers and "wrong" in answers:
        not_sure = answers.get("not_sure", 0)
        if 0 < not_sure < 1 and not float(not_sure).is_integer():
            not_sure = round(not_sure * (n or 0))
        parts.append(f"{int(answers['right'])} right, {int(not_sure)} not sure, {int(answers['wrong'])} wrong")
    elif "correct" in answers:
        right, not_sure = answers["correct"], answers.get("not_sure", 0.0)
        parts.append(f"{right:.0%} right, {not_sure:.0%} not sure, {max(0.0, 1 - right - not_sure):.0%} wrong")
    if "ends_turn" in answers:
        parts.append(f"{answers['ends_turn']:.0%} of its sampled answers end the turn")
    if not parts:
        return None
    return f"on {int(n)} held-out prompts: " + "; ".join(parts) if n else "on held-out prompts: " + "; ".join(parts)


def _shown_path(path: Path) -> str:
    try:
        return os.path.relpath(path) if Path(path).is_absolute() and not os.path.relpath(path).startswith("..") \
            else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def closing_lines(run_dir: Path, manifests: dict[str, dict], since: float = 0.0,
                  width: int | None = None) -> list[str]:
    """The run's last words: what the final chat model does on held-out prompts, the report (when this run
    wrote one) and the command to talk to the model.

    The held-out line goes a clause a line where it is longer than 80 columns (or ``width``); with ``width``
    every line is folded to it as well (:func:`~lmforge.plugins.console.layout.fold`), the chat command kept
    whole on a line of its own so that it can be copied."""
    run_dir = Path(run_dir)
    lines = []
    stage = chat_model_stage(run_dir, manifests)
    if stage is not None:
        summary = held_out_summary(manifests[stage].get("metrics") or {})
        if summary:  # one line, or a line per clause where it would not fit an 80-column terminal
            text = f"{PREFIX}{stage} {summary}"
            first, *rest = text.split("; ") if len(text) > min(CLOSING_WIDTH, width or CLOSING_WIDTH) else [text]
            lines += [first + ";" * bool(rest), *(" " * len(PREFIX) + clause for clause in rest)]
    report = run_dir / "report.html"
    if report.is_file() and report.stat().st_mtime >= since:
        lines.append(f"{PREFIX}report: {_shown_path(report)}")
    command = f"lmforge chat {_shown_path(run_dir / stage)}" if stage is not None else ""
    if command:
        lines.append(f"{PREFIX}talk to it: {command}")
    if width is not None:
        lines = [part for line in lines for part in fold(line, width, keep=(command,)).split("\n")]
    return lines
