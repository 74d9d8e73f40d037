"""The run's console: one live display with a line per stage, everything else to ``runs/<name>/run.log``.

Why one display instead of each library's own output: a default run used to print ~90 lines — five kinds of
progress bar (trainer, evaluation, datasets' map, "Writing model shards", sampling), raw trainer dicts and
FutureWarnings. Here, for the length of a pipeline:

- every ``tqdm`` bar a stage opens (HF/TRL trainers, lmforge's own loops, samplers) is routed into that
  stage's line of one ``rich`` display — bar, step count, steps/s, time left, the latest loss / reward —
  instead of the terminal; text written through ``tqdm.write`` (trainer dicts) goes to the log file;
- Python warnings and the library loggers go to ``run.log`` (:class:`lmforge.library_output.LibraryOutput`,
  the same routing every plugin command gets), those raised while the run was planned included (the pipeline
  holds them until :func:`lmforge_pipeline_start`); lmforge's own warnings about the user's files (a
  ``UserWarning`` from lmforge's code whose message starts with a path: unfilled placeholders, skipped
  records) also get one line ``lmforge: warning: <message>`` (:meth:`RunConsole.show_warning`);
- when a stage ends its line becomes its summary (time, key metrics).

The display is laid out for the terminal's width at every refresh (:func:`plan_columns`). Every pipeline
stage has a row from the start (waiting ones dimmed), its full name first. Where the row has room (about 100
columns and wider) the metrics follow on the same row, shortened with "…" to fit; narrower, they go to a
second row under the bar, so at 80 columns every stage keeps its name, bar, step count, rate and time left.
Narrower still, columns go in the order of :data:`DROP_ORDER` — steps/s, then the bar, then the time left,
then the step count — and the name never goes.

Where stderr is not a terminal (CI, ``| tee``) there is no live display: at most three plain lines per stage
(started, halfway, done), each folded to ``COLUMNS`` (80 where unset) under its ``lmforge: `` prefix, as the
closing lines are (:func:`~lmforge.plugins.console.layout.fold`). ``run.quiet=true`` prints nothing here
(errors and the CLI's final line still print). A run ends with what the final chat model does on the held-out
prompts, the report's path and the command to talk to the model (:func:`closing_lines`). Everything is
restored when the pipeline ends or a stage fails, so library use in the same process is left as it was.
"""

from __future__ import annotations

import io
import os
import sys
import time
import warnings
from pathlib import Path

from lmforge import hookimpl
from lmforge.library_output import LibraryOutput
from lmforge.plugins.console.closing import chat_model_stage, closing_lines, held_out_summary  # noqa: F401
from lmforge.plugins.console.layout import (  # noqa: F401 (re-exported)
    DROP_ORDER,
    PLAIN_MARKS,
    SUMMARY_METRICS,
    StageLine,
    StageTable,
    _duration,
    _fmt,
    _rate,
    fold,
    plain_width,
    plan_columns,
)
from lmforge.plugins.lib.checkpoints import latest_checkpoint, step_of

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
        self._saved_showwarning = None
        self._warned: set[str] = set()
        self.started = time.time()

    # ------------------------------------------------------------ setup / teardown

    def start(self) -> None:
        from rich.console import Console

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.output.start()
        self._saved_showwarning = warnings.showwarning  # the log file's, set by output.start()
        warnings.showwarning = self.show_warning
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
        if self._saved_showwarning is not None:
            if warnings.showwarning == self.show_warning:
                warnings.showwarning = self._saved_showwarning
            self._saved_showwarning = None
        self.output.restore()

    # ------------------------------------------------------------ output

    def width(self) -> int:
        """What a line may take: a terminal's width less one; else ``COLUMNS`` (80 where unset)."""
        if self.console is not None and self.console.is_terminal:
            return max(20, self.console.width - 1)
        return plain_width()

    def say(self, message: str, keep=()) -> None:
        """A line to the terminal, folded to :meth:`width` (never inside a word or a ``keep`` phrase)."""
        if self.quiet or self.console is None:
            return
        self.console.print(fold(message, self.width(), keep), markup=False, highlight=False, soft_wrap=True)

    def show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        """``warnings.showwarning`` while the run is on: every warning to run.log; lmforge's own warnings about
        the user's files also as one line on the terminal (once per message)."""
        self._saved_showwarning(message, category, filename, lineno, file, line)
        text = str(message)
        if file is None and _users_warning(category, filename, text) and text not in self._warned:
            self._warned.add(text)
            self.say(f"lmforge: warning: {text}")

    def log(self, message: str) -> None:
        self.output.log(message)

    # ------------------------------------------------------------ stages

    def stage_start(self, name: str, plugin: str, total: int | None, resumes_at: int = 0) -> None:
        self.route_library_output()
        line = self.lines.get(name)
        if line is None:
            line = self.lines[name] = StageLine(name)
        line.plugin, line.state, line.started = plugin, "running", time.time()
        line.total = line.expected = total
        line.first_log = (resumes_at, line.started)  # the rate counts the steps done from here on
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
        line.rate = _bar_rate(bar) or line.rate
        self._show(line)

    def metrics(self, name: str, step, metrics: dict) -> None:
        line = self.lines.get(name)
        if line is None:
            return
        line.metrics.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        if step is not None and line.bar is None and line.total and isinstance(step, (int, float)) and step > line.n:
            # a stage without a tqdm bar (the HF/TRL trainers) moves by its logged steps. The rate counts from
            # the step it started at (a resumed stage: its newest checkpoint's, whose steps were not done now);
            # a line that has no start yet counts from its first log
            now = time.time()
            if line.first_log is None:
                line.first_log = (step, now)
            first_step, first_time = line.first_log
            line.move(int(step))
            if step > first_step and now > first_time:
                line.rate = (step - first_step) / (now - first_time)
        self.log(f"{name} step {step}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
        self._show(line)

    def _show(self, line: StageLine) -> None:
        """The live display redraws itself; without one, a plain line when the stage passes a mark."""
        if self.live is not None or self.quiet or not line.total:
            return
        mark = min(PLAIN_MARKS - 1, int(PLAIN_MARKS * line.n / line.total))
        if mark > line.marks_said and line.n < line.total and line.rate:  # at 100% the summary line follows;
            # a stage that has no rate yet (its first log, after a resume past halfway) says it at its next move
            line.marks_said = mark
            rate, eta = _rate(line.rate), line.eta()
            self.say(f"lmforge: {line.name} {line.n}/{line.total} {line.unit}s ({100 * line.n // line.total}%) "
                     f"{rate + ', ' if rate else ''}{_duration(eta)} left  {line.metric_text()}".rstrip())

    def stage_end(self, name: str, seconds: float, artifact, metrics: dict) -> None:
        line = self.lines.get(name) or self.lines.setdefault(name, StageLine(name))
        self.current = None
        shown, labels = [], set()
        for key, label in SUMMARY_METRICS:
            value = metrics.get(key)
            if isinstance(value, (int, float)) and label not in labels and len(shown) < 3:
                shown.append(f"{label} {_fmt(value)}")
                labels.add(label)
        line.state, line.seconds, line.summary = "done", seconds, ", ".join(shown)
        summary = f"{name} done in {seconds:.1f}s" + (f": {line.summary}" if shown else "") + f" -> {artifact}"
        self.log(summary)
        if self.live is None:
            self.say(f"lmforge: {summary}", keep=(f"-> {artifact}", *shown))

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
        for line in closing_lines(self.run_dir, manifests, since=self.started, width=self.width()):
            self.say(line, keep=(line.strip(),))  # folded already: the chat command stays whole


def _bar_rate(bar) -> float | None:
    """A bar's steps per second: tqdm's smoothed rate, else the steps it moved since it opened over the time
    since then (a bar opened at a resumed step, ``initial=``, counts from there)."""
    info = bar.format_dict
    if info.get("rate"):
        return info["rate"]
    moved, elapsed = bar.n - (info.get("initial") or 0), info.get("elapsed") or 0
    return moved / elapsed if moved > 0 and elapsed > 0 else None


_PACKAGE_DIRS = tuple(os.path.realpath(Path(path).parent) + os.sep for path in (
    sys.modules["lmforge"].__file__, sys.modules["lmforge.plugins"].__file__))


def _users_warning(category, filename, text: str) -> bool:
    """A warning for the terminal: a ``UserWarning`` raised in lmforge's own code (not a library's) about one
    of the user's files, i.e. whose message starts with its path ("data/sft.jsonl: unfilled placeholders …")."""
    if not (isinstance(category, type) and issubclass(category, UserWarning)):
        return False
    if not os.path.realpath(filename or "").startswith(_PACKAGE_DIRS):
        return False
    head = text.split(": ", 1)[0] if ": " in text else ""
    return bool(head) and ("/" in head or os.sep in head or bool(Path(head).suffix) or Path(head).exists())


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
        newest = latest_checkpoint(context.work_dir) if context.work_dir is not None else None
        console.stage_start(stage_name, plugin, _stage_total(stage), resumes_at=step_of(newest) if newest else 0)


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
