"""The live display's rows and columns: a stage's line, and which columns fit the terminal's width."""

from __future__ import annotations

import math
import os
import textwrap
import time
from dataclasses import dataclass, field
from typing import ClassVar

SHOWN_METRICS = (("loss", "loss"), ("eval_loss", "val"), ("val_loss", "val"), ("reward", "reward"),
                 ("rewards/accuracies", "acc"), ("rewards/margins", "margin"), ("objective/rlhf_reward", "reward"))
# A done line shows the first three of these its stage's manifest metrics hold (one per label), in this order.
# RL stages (PPO, GRPO, TRL's online trainers) have no train loss worth showing: their last reward and KL are.
SUMMARY_METRICS = (("docs_out", "docs kept"), ("bad_records", "bad records skipped"), ("vocab_size", "vocab"),
                   ("train_loss", "train loss"), ("final_train_loss", "train loss"), ("eval_loss", "val loss"),
                   ("val_loss", "val loss"), ("perplexity", "ppl"), ("rewards/accuracies", "reward acc"), ("reward", "reward"),
                   ("objective/rlhf_reward", "reward"), ("kl", "kl"), ("objective/kl", "kl"),
                   ("completions", "completions"), ("pairs", "pairs"), ("eval_loss_start", "val loss before"))
PLAIN_MARKS = 2  # non-TTY: a line when a stage passes half of its steps (with "started" and "done": three lines)
CLOSING_WIDTH = 80
PLAIN_WIDTH = 80  # where stderr is no terminal and COLUMNS is not set
PREFIX = "lmforge: "  # continuation lines of a folded line are indented under the text after it
CHAT_MODEL_KINDS = ("finetuner", "aligner")  # the stages whose model the closing lines offer to chat with

# The live display's columns (characters).
RATE_WIDTH = 8  # "12.3/s"
ETA_WIDTH = 10  # "12:34 left"
BAR_MIN, BAR_MAX, BAR_ALONE = 10, 30, 40  # a bar narrower than BAR_MIN goes; BAR_ALONE: metrics on their own row
INLINE_BAR, INLINE_INFO = 16, 40  # metrics share the row when a bar this wide and this much text fit beside it
DROP_ORDER = ("rate", "bar", "eta", "count")  # too narrow for a row: these go first, in this order; never the name


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


def _rate(rate: float | None) -> str:
    if not rate:
        return ""
    return f"{rate:.3g}/s" if rate < 100 else f"{rate:.0f}/s" if rate < 10_000 else f"{rate / 1000:.0f}k/s"


def plain_width() -> int:
    """The width plain (non-terminal) output is folded to: ``COLUMNS``, else :data:`PLAIN_WIDTH`."""
    columns = os.environ.get("COLUMNS", "").strip()
    return int(columns) if columns.isdigit() and int(columns) > 0 else PLAIN_WIDTH


def fold(text: str, width: int, keep=()) -> str:
    """``text`` in lines of at most ``width`` characters, continuation lines indented under the text after
    :data:`PREFIX` (as the closing lines are). Lines break at spaces only, never inside a word (a path, a
    number), nor inside the ``keep`` phrases (a command to copy, "-> <path>", "loss 0.25"); a word longer than
    the width overflows on its own line. Each line of a multi-line text is folded on its own."""
    if all(len(line) <= width for line in text.split("\n")):
        return text
    glue = "\x00"  # no whitespace to textwrap: a kept phrase is one word
    for phrase in sorted((p for p in keep if p), key=len, reverse=True):
        text = text.replace(phrase, phrase.replace(" ", glue))
    folded = []
    for line in text.split("\n"):
        body = line.lstrip(" ")  # a line indented already (a continuation) keeps its indent
        folded += textwrap.wrap(body, max(width, len(PREFIX) + 1), initial_indent=line[:len(line) - len(body)],
                                subsequent_indent=" " * len(PREFIX), break_long_words=False,
                                break_on_hyphens=False) or [""]
    return "\n".join(folded).replace(glue, " ")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else (text[: width - 1] + "…" if width > 0 else "")


class StageLine:
    """What one stage's line shows: its state, its main bar's position and rate, its latest metrics or summary."""

    def __init__(self, name: str, plugin: str = ""):
        self.name, self.plugin = name, plugin
        self.state = "waiting"  # waiting, running, done, skipped
        self.started = time.time()
        self.n, self.total, self.rate, self.unit = 0, None, None, "step"
        self.metrics: dict[str, float] = {}
        self.bar = None  # the tqdm bar this line follows
        self.expected = None  # the stage's max_steps, when it has one
        self.first_log = None  # (step, time) of the first logged step, for the rate of a stage without a bar
        self.marks_said = 0
        self.moved: float | None = None  # when n last changed
        self.seconds: float | None = None
        self.summary = ""

    def metric_text(self) -> str:
        shown, seen = [], set()
        for key, label in SHOWN_METRICS:
            if key in self.metrics and label not in seen:
                shown.append(f"{label} {_fmt(self.metrics[key])}")
                seen.add(label)
        return "  ".join(shown)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the current rate, counting down from the last move (a trainer logs every N steps)."""
        if not (self.rate and self.total):
            return None
        left = (self.total - self.n) / self.rate
        return max(0.0, left - (now - self.moved)) if now is not None and self.moved is not None else left

    def move(self, n: int) -> None:
        if n != self.n:
            self.n, self.moved = n, time.time()

    def cells(self, now: float) -> dict[str, str]:
        """The row's text per column (the bar is drawn from :attr:`fraction`)."""
        count = f"{self.n}/{self.total}" if self.total and (self.n or self.state != "done") else \
            (str(self.n) if self.n else "")
        if self.state == "running":
            eta = self.eta(now)
            return {"count": count, "rate": _rate(self.rate),
                    "eta": f"{_duration(eta)} left" if eta is not None else _duration(now - self.started),
                    "info": self.metric_text() or self.plugin}
        if self.state == "done":
            return {"count": count, "rate": "", "eta": f"✓ {_duration(self.seconds)}", "info": self.summary}
        if self.state == "skipped":
            return {"count": "", "rate": "", "eta": "✓ before", "info": "complete, not redone (run.force=true redoes it)"}
        return {"count": "", "rate": "", "eta": "", "info": ""}

    @property
    def fraction(self) -> float:
        if self.state in ("done", "skipped"):
            return 1.0
        return min(1.0, self.n / self.total) if self.total else 0.0


@dataclass
class Columns:
    """Which columns a row shows at a width: ``shown`` in order after the name, the bar's width (0: no bar) and
    the room for the metrics on the same row (``info`` > 0) or on a row of their own under it (``info`` 0)."""

    name: int
    bar: int
    shown: list[str] = field(default_factory=list)
    info: int = 0


def plan_columns(width: int, name_width: int, count_width: int) -> Columns:
    """The display's columns at ``width``: everything with the metrics beside it where that fits, else the
    metrics on their own row; narrower, :data:`DROP_ORDER` decides what goes. The name always stays."""
    widths = {"count": count_width, "rate": RATE_WIDTH, "eta": ETA_WIDTH}
    shown = ["count", "rate", "eta"]
    used = name_width + sum(widths[c] + 1 for c in shown)
    if width - used - 1 - INLINE_BAR - 1 >= INLINE_INFO:
        bar = min(BAR_MAX, width - used - 2 - INLINE_INFO)
        return Columns(name_width, bar, shown, info=width - used - bar - 2)
    bar_shown = True
    for gone in (None, *DROP_ORDER):
        if gone == "bar":
            bar_shown = False
        elif gone is not None:
            shown.remove(gone)
        used = name_width + sum(widths[c] + 1 for c in shown)
        if bar_shown and width - used - 1 >= BAR_MIN:
            return Columns(name_width, min(BAR_ALONE, width - used - 1), shown)
        if not bar_shown and used <= width:
            break
    return Columns(name_width, 0, shown)


class StageTable:
    """The live display: one row per stage (and a row of metrics under it where the width asks for one),
    laid out by :func:`plan_columns` for the width rich renders it at."""

    STYLES: ClassVar[dict[str, str]] = {"waiting": "dim", "running": "bold", "done": "bold green", "skipped": "green"}

    def __init__(self, lines: dict[str, StageLine]):
        self.lines = lines

    def rows(self, width: int, now: float | None = None):
        from rich.text import Text

        now = time.time() if now is None else now
        lines = list(self.lines.values())
        if not lines:
            return []
        cells = [line.cells(now) for line in lines]
        name_width = max(len(line.name) for line in lines)
        count_width = max([5, *(len(c["count"]) for c in cells)])
        columns = plan_columns(width, name_width, count_width)
        widths = {"count": count_width, "rate": RATE_WIDTH, "eta": ETA_WIDTH}
        indent = name_width + 1 if width - name_width - 1 >= 30 else 2
        rows = []
        for line, cell in zip(lines, cells):
            row = Text(no_wrap=True, overflow="crop")
            row.append(line.name.ljust(name_width), style=self.STYLES[line.state])
            if columns.bar:
                row.append(" ")
                row.append_text(_bar(line, columns.bar))
            for column in columns.shown:
                text = _cut(cell[column], widths[column]).rjust(widths[column])
                row.append(" " + text, style="dim" if line.state == "waiting" else "")
            info = cell["info"]
            if columns.info and info:
                row.append(" " + _cut(info, columns.info), style="cyan" if line.state == "running" else "")
            rows.append(row)
            if not columns.info and info and line.state != "waiting":
                rows.append(Text(" " * indent + _cut(info, width - indent), no_wrap=True, overflow="crop",
                                 style="cyan" if line.state == "running" else "dim"))
        return rows

    def __rich_console__(self, console, options):
        yield from self.rows(options.max_width)


def _bar(line: StageLine, width: int):
    from rich.text import Text

    done = round(line.fraction * width)
    style = {"done": "green", "skipped": "green", "running": "magenta"}.get(line.state, "grey37")
    bar = Text("━" * done, style=style)
    bar.append("━" * (width - done), style="grey23")
    return bar
