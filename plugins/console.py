"""The run's console: one live display with a line per stage, everything else to ``runs/<name>/run.log``.

Why one display instead of each library's own output: a default run used to print ~90 lines — five kinds of
progress bar (trainer, evaluation, datasets' map, "Writing model shards", sampling), raw trainer dicts and
FutureWarnings. Here, for the length of a pipeline:

- every ``tqdm`` bar a stage opens (HF/TRL trainers, lmforge's own loops, samplers) is routed into that
  stage's line of one ``rich`` display — bar, step count, steps/s, time left, the latest loss / reward —
  instead of the terminal; text written through ``tqdm.write`` (trainer dicts) goes to the log file;
- Python warnings and the library loggers go to ``run.log`` (:class:`lmforge.library_output.LibraryOutput`,
  the same routing every plugin command gets);
- when a stage ends its line becomes its summary (time, key metrics).

The display is laid out for the terminal's width at every refresh (:func:`plan_columns`). Every pipeline
stage has a row from the start (waiting ones dimmed), its full name first. Where the row has room (about 100
columns and wider) the metrics follow on the same row, shortened with "…" to fit; narrower, they go to a
second row under the bar, so at 80 columns every stage keeps its name, bar, step count, rate and time left.
Narrower still, columns go in the order of :data:`DROP_ORDER` — steps/s, then the bar, then the time left,
then the step count — and the name never goes.

Where stderr is not a terminal (CI, ``| tee``) there is no live display: at most three plain lines per stage
(started, halfway, done). ``run.quiet=true`` prints nothing here (errors and the CLI's final line still
print). A run ends with what the final chat model does on the held-out prompts, the report's path and the
command to talk to the model (:func:`closing_lines`). Everything is restored when the pipeline ends or a stage
fails, so library use in the same process is left as it was.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from lmforge import hookimpl
from lmforge.library_output import LibraryOutput

SHOWN_METRICS = (("loss", "loss"), ("eval_loss", "val"), ("val_loss", "val"), ("reward", "reward"),
                 ("rewards/accuracies", "acc"), ("rewards/margins", "margin"), ("objective/rlhf_reward", "reward"))
SUMMARY_METRICS = (("docs_out", "docs kept"), ("vocab_size", "vocab"), ("train_loss", "train loss"),
                   ("final_train_loss", "train loss"), ("eval_loss", "val loss"), ("val_loss", "val loss"),
                   ("perplexity", "ppl"), ("rewards/accuracies", "reward acc"), ("completions", "completions"),
                   ("pairs", "pairs"), ("eval_loss_start", "val loss before"))
PLAIN_MARKS = 2  # non-TTY: a line when a stage passes half of its steps (with "started" and "done": three lines)
CLOSING_WIDTH = 80
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


# ---------------------------------------------------------------- the end of a run


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


def closing_lines(run_dir: Path, manifests: dict[str, dict], since: float = 0.0) -> list[str]:
    """The run's last words: what the final chat model does on held-out prompts, the report (when this run
    wrote one) and the command to talk to the model."""
    run_dir = Path(run_dir)
    lines = []
    stage = chat_model_stage(run_dir, manifests)
    if stage is not None:
        summary = held_out_summary(manifests[stage].get("metrics") or {})
        if summary:  # one line, or a line per clause where it would not fit an 80-column terminal
            text = f"lmforge: {stage} {summary}"
            first, *rest = text.split("; ") if len(text) > CLOSING_WIDTH else [text]
            lines += [first + ";" * bool(rest), *(" " * len("lmforge: ") + clause for clause in rest)]
    report = run_dir / "report.html"
    if report.is_file() and report.stat().st_mtime >= since:
        lines.append(f"lmforge: report: {_shown_path(report)}")
    if stage is not None:
        lines.append(f"lmforge: talk to it: lmforge chat {_shown_path(run_dir / stage)}")
    return lines


# ---------------------------------------------------------------- the console


class RunConsole:
    def __init__(self, run_dir: Path, quiet: bool, stages=()):
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.console = None
        self.live = None
        self.lines: dict[str, StageLine] = {name: StageLine(name) for name in stages}
        self.current: StageLine | None = None
        self.output = LibraryOutput(self.run_dir / "run.log")
        self._saved_tqdm: list[tuple] = []
        self.started = time.time()

    # ------------------------------------------------------------ setup / teardown

    def start(self) -> None:
        from rich.console import Console

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.output.start()
        self._route_tqdm()
        self.console = Console(stderr=True, highlight=False)
        if self.console.is_terminal and not self.quiet:
            from rich.live import Live

            self.live = Live(StageTable(self.lines), console=self.console, refresh_per_second=4, transient=False)
            self.live.start()

    def route_library_output(self) -> None:
        """Library loggers -> run.log only; tqdm bars -> this display (called again as libraries get imported)."""
        self.output.route()
        self._route_tqdm()

    def _route_tqdm(self) -> None:
        import tqdm.auto

        routed = getattr(self, "_routed", None)
        if routed is None:
            routed = self._routed = _routed_tqdm(tqdm.auto.tqdm, self)
        for module_name in ("tqdm.auto", "tqdm.autonotebook", "transformers.trainer_callback", "trl.trainer.utils"):
            module = sys.modules.get(module_name)
            if module is not None and getattr(module, "tqdm", None) not in (None, routed):
                self._saved_tqdm.append((module, module.tqdm))
                module.tqdm = routed

    def stop(self) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.stop()
            self.live = None
        for module, original in reversed(self._saved_tqdm):
            module.tqdm = original
        self._saved_tqdm.clear()
        self.output.restore()

    # ------------------------------------------------------------ output

    def say(self, message: str) -> None:
        if self.quiet or self.console is None:
            return
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def log(self, message: str) -> None:
        self.output.log(message)

    # ------------------------------------------------------------ stages

    def stage_start(self, name: str, plugin: str, total: int | None) -> None:
        self.route_library_output()
        line = self.lines.get(name)
        if line is None:
            line = self.lines[name] = StageLine(name)
        line.plugin, line.state, line.started = plugin, "running", time.time()
        line.total = line.expected = total
        self.current = line
        self.log(f"stage {name} ({plugin}) started")
        if self.live is None and not self.quiet:
            self.say(f"lmforge: {name} ({plugin}) started" + (f": {total} steps" if total else ""))

    def bar_update(self, bar) -> None:
        """A routed tqdm bar moved. The line follows the stage's main bar: the one with the stage's ``max_steps``
        as its total where the stage has one (not evaluation or shard-writing bars), else the first bar with
        more than one item, or a later one once that closed unfinished."""
        line = self.current
        if line is None:
            return
        if line.bar is not bar:
            if line.expected is not None and bar.total != line.expected:
                return
            if line.expected is None and bar.total is not None and bar.total <= 1:
                return
            if line.bar is not None and not (getattr(line.bar, "_lmforge_closed", False)
                                              and (line.bar.total is None or line.bar.n < line.bar.total)):
                return
            line.bar = bar
        line.move(bar.n)
        line.total = bar.total or line.total
        unit = getattr(bar, "unit", "it") or "it"
        line.unit = "step" if unit == "it" else unit
        rate = bar.format_dict.get("rate")
        elapsed = time.time() - line.started
        line.rate = rate if rate else (line.n / elapsed if elapsed > 0 and line.n else None)
        self._show(line)

    def metrics(self, name: str, step, metrics: dict) -> None:
        line = self.lines.get(name)
        if line is None:
            return
        line.metrics.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        if step is not None and line.bar is None and line.total and isinstance(step, (int, float)) and step > line.n:
            # a stage without a tqdm bar (the HF/TRL trainers) moves by its logged steps; rate since the first log
            now = time.time()
            if line.first_log is None:
                line.first_log = (step, now)
            first_step, first_time = line.first_log
            line.move(int(step))
            if step > first_step and now > first_time:
                line.rate = (step - first_step) / (now - first_time)
            elif now > line.started:
                line.rate = step / (now - line.started)
        self.log(f"{name} step {step}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
        self._show(line)

    def _show(self, line: StageLine) -> None:
        """The live display redraws itself; without one, a plain line when the stage passes a mark."""
        if self.live is not None or self.quiet or not line.total:
            return
        mark = min(PLAIN_MARKS - 1, int(PLAIN_MARKS * line.n / line.total))
        if mark > line.marks_said and line.n < line.total:  # at 100% the summary line follows
            line.marks_said = mark
            rate, eta = _rate(line.rate), line.eta()
            self.say(f"lmforge: {line.name} {line.n}/{line.total} {line.unit}s ({100 * line.n // line.total}%) "
                     f"{rate + ', ' if rate else ''}{_duration(eta)} left  {line.metric_text()}".rstrip())

    def stage_end(self, name: str, seconds: float, artifact, metrics: dict) -> None:
        line = self.lines.get(name) or self.lines.setdefault(name, StageLine(name))
        self.current = None
        shown, labels = [], set()
        for key, label in SUMMARY_METRICS:
            if key in metrics and label not in labels and len(shown) < 3:
                shown.append(f"{label} {_fmt(metrics[key])}")
                labels.add(label)
        line.state, line.seconds, line.summary = "done", seconds, ", ".join(shown)
        summary = f"{name} done in {seconds:.1f}s" + (f": {line.summary}" if shown else "") + f" -> {artifact}"
        self.log(summary)
        if self.live is None:
            self.say(f"lmforge: {summary}")

    def stage_skipped(self, name: str, artifact) -> None:
        message = f"{name} skipped: complete at {artifact} (run.force=true redoes it)"
        self.log(message)
        line = self.lines.get(name) or self.lines.setdefault(name, StageLine(name))
        line.state = "skipped"
        if self.live is None:
            self.say(f"lmforge: {message}")

    def finish(self, manifests: dict[str, dict]) -> None:
        """Stop the display, then the closing lines."""
        self.stop()
        for line in closing_lines(self.run_dir, manifests, since=self.started):
            self.say(line)


def _routed_tqdm(base, run_console: RunConsole):
    """A tqdm class whose bars report to ``run_console`` instead of drawing, and whose write() goes to run.log."""

    class RoutedTqdm(base):
        def __init__(self, *args, **kwargs):
            kwargs["file"] = io.StringIO()
            kwargs.pop("dynamic_ncols", None)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            shown = super().update(n)
            if not self.disable:  # tqdm throttles display(); the stage line wants every step
                run_console.bar_update(self)
            return shown

        def display(self, msg=None, pos=None):
            if not self.disable:
                run_console.bar_update(self)
            return True

        def close(self):
            if not self.disable and not getattr(self, "_lmforge_closed", False):
                run_console.bar_update(self)
            self._lmforge_closed = True
            super().close()

        @classmethod
        def write(cls, s, file=None, end="\n", nolock=False):
            run_console.log(str(s))

    RoutedTqdm.__name__ = RoutedTqdm.__qualname__ = "RoutedTqdm"
    return RoutedTqdm


_consoles: dict[str, RunConsole] = {}


def _console(context) -> RunConsole | None:
    return _consoles.get(str(context.run_dir)) if context.run_dir is not None else None


def _stage_total(stage) -> int | None:
    total = getattr(getattr(stage, "config", None), "max_steps", None)
    return total if isinstance(total, int) and total > 0 else None


@hookimpl
def lmforge_pipeline_start(run_dir, config, context):
    if not context.is_main_process:
        return
    for leftover in list(_consoles):  # a run that failed before any stage (e.g. an evaluator's config) left one
        _consoles.pop(leftover).stop()
    stages = list(((config or {}).get("pipeline") or {}).get("stages") or {})
    console = _consoles[str(run_dir)] = RunConsole(run_dir, quiet=context.quiet, stages=stages)
    console.start()


@hookimpl
def lmforge_stage_start(stage_name, stage, inputs, context):
    console = _console(context)
    if console is not None:
        if stage.kind in ("pretrainer", "finetuner", "aligner"):
            try:  # the trainers' progress callback binds tqdm at import: import it now so its bar is routed
                import transformers.trainer_callback  # noqa: F401
            except ImportError:
                pass
        plugin = ((context.config or {}).get(stage_name) or {}).get("plugin") or type(stage).__name__
        console.stage_start(stage_name, plugin, _stage_total(stage))


@hookimpl(wrapper=True, tryfirst=True)  # outermost: also sees failures of the evaluators' wrapper inside it
def lmforge_run_stage(stage, inputs, output_dir, context):
    console = _console(context)
    try:
        return (yield)
    except BaseException:
        if console is not None:  # the error is the last thing the user sees, on a clean terminal
            _consoles.pop(str(context.run_dir), None)
            console.stop()
        raise


@hookimpl
def lmforge_log_metrics(stage_name, step, metrics, context):
    console = _console(context)
    if console is not None:
        console.metrics(stage_name, step, metrics)


@hookimpl
def lmforge_stage_end(stage_name, stage, artifact, manifest, context):
    console = _console(context)
    if console is not None:
        console.stage_end(stage_name, manifest.get("seconds", 0.0), artifact, manifest.get("metrics") or {})


@hookimpl
def lmforge_stage_skipped(stage_name, artifact, manifest, context):
    console = _console(context)
    if console is not None:
        console.stage_skipped(stage_name, artifact)


@hookimpl(trylast=True)  # after the report is written: the closing lines name it
def lmforge_pipeline_end(run_dir, manifests, context):
    console = _consoles.pop(str(run_dir), None)
    if console is not None:
        console.finish(manifests)
