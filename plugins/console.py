"""The run's console: one live display with a line per stage, everything else to ``runs/<name>/run.log``.

Why one display instead of each library's own output: a default run used to print ~90 lines — five kinds of
progress bar (trainer, evaluation, datasets' map, "Writing model shards", sampling), raw trainer dicts and
FutureWarnings. Here, for the length of a pipeline:

- every ``tqdm`` bar a stage opens (HF/TRL trainers, lmforge's own loops, samplers) is routed into that
  stage's line of one ``rich`` display — bar, steps/s, time left, the latest loss / reward — instead of the
  terminal; text written through ``tqdm.write`` (trainer dicts) goes to the log file;
- Python warnings and the transformers / datasets / huggingface_hub / accelerate / TRL loggers go to
  ``run.log`` in the run directory, not the terminal;
- when a stage ends its line becomes its summary (time, key metrics, artifact).

Where stderr is not a terminal (CI, ``| tee``) there is no live display: one plain line when a stage passes
each quarter of its steps, and its summary — a default run prints under 30 lines. ``run.quiet=true`` prints
nothing here (errors and the CLI's final line still print). Everything is restored when the pipeline ends or
a stage fails, so library use in the same process is left as it was.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
import time
from pathlib import Path

from lmforge import hookimpl

LIBRARY_LOGGERS = ("transformers", "datasets", "huggingface_hub", "accelerate", "trl", "peft", "torch",
                   "py.warnings", "lmforge")
QUIET_ENV = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "TOKENIZERS_PARALLELISM": "false"}
SHOWN_METRICS = (("loss", "loss"), ("eval_loss", "val"), ("val_loss", "val"), ("reward", "reward"),
                 ("rewards/accuracies", "acc"), ("rewards/margins", "margin"), ("objective/rlhf_reward", "reward"))
SUMMARY_METRICS = (("docs_out", "docs kept"), ("vocab_size", "vocab"), ("train_loss", "train loss"),
                   ("final_train_loss", "train loss"), ("eval_loss", "val loss"), ("val_loss", "val loss"),
                   ("perplexity", "ppl"), ("rewards/accuracies", "reward acc"), ("completions", "completions"),
                   ("eval_loss_start", "val loss before"))
PLAIN_QUARTERS = 4  # non-TTY: a line at each quarter of a stage's steps


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


class StageLine:
    """What one stage's line shows: its main bar's position and rate, and its latest metrics."""

    def __init__(self, name: str, plugin: str):
        self.name, self.plugin = name, plugin
        self.started = time.time()
        self.n, self.total, self.rate, self.unit = 0, None, None, "step"
        self.metrics: dict[str, float] = {}
        self.bar = None  # the tqdm bar this line follows
        self.expected = None  # the stage's max_steps, when it has one
        self.first_log = None  # (step, time) of the first logged step, for the rate of a stage without a bar
        self.quarters_said = 0
        self.task = None

    def metric_text(self) -> str:
        shown, seen = [], set()
        for key, label in SHOWN_METRICS:
            if key in self.metrics and label not in seen:
                shown.append(f"{label} {_fmt(self.metrics[key])}")
                seen.add(label)
        return "  ".join(shown)


class RunConsole:
    def __init__(self, run_dir: Path, quiet: bool):
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.console = None
        self.live = False
        self.progress = None
        self.lines: dict[str, StageLine] = {}
        self.current: StageLine | None = None
        self._saved_loggers: dict[str, tuple] = {}
        self._saved_env: dict[str, str | None] = {}
        self._saved_tqdm: list[tuple] = []
        self._captured_warnings = False
        self._restore: list = []  # library switches to turn back on when the run ends
        self.log_handler: logging.Handler | None = None

    # ------------------------------------------------------------ setup / teardown

    def start(self) -> None:
        from rich.console import Console

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_handler = logging.FileHandler(self.run_dir / "run.log", encoding="utf-8")
        self.log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for key, value in QUIET_ENV.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        logging.captureWarnings(True)
        self._captured_warnings = True
        self.route_library_output()
        self.console = Console(stderr=True, highlight=False)
        self.live = self.console.is_terminal and not self.quiet
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn

            self.progress = Progress(
                TextColumn("[bold]{task.fields[stage]:<11}"), BarColumn(bar_width=28),
                TextColumn("{task.fields[count]:>11}"), TextColumn("{task.fields[rate]:>12}"),
                TextColumn("{task.fields[eta]:>11}"), TextColumn("{task.fields[info]}"),
                console=self.console, transient=False, refresh_per_second=4)
            self.progress.start()

    def route_library_output(self) -> None:
        """Library loggers -> run.log only; tqdm bars -> this display (called again as libraries get imported)."""
        try:  # its own bars ("Loading weights", "Writing model shards") are not a stage's progress
            import transformers.utils.logging as transformers_logging
        except ImportError:
            transformers_logging = None
        if transformers_logging is not None:
            transformers_logging.get_logger()  # let transformers install its handler, then take it away
            if transformers_logging.is_progress_bar_enabled():
                transformers_logging.disable_progress_bar()
                self._restore.append(transformers_logging.enable_progress_bar)
        datasets = sys.modules.get("datasets")  # imported before the run: its env switch was read already
        if datasets is not None and datasets.is_progress_bar_enabled():
            datasets.disable_progress_bars()
            self._restore.append(datasets.enable_progress_bars)
        hub = sys.modules.get("huggingface_hub.utils")
        if hub is not None and not hub.are_progress_bars_disabled():
            hub.disable_progress_bars()
            self._restore.append(hub.enable_progress_bars)
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            if name not in self._saved_loggers:
                self._saved_loggers[name] = (list(logger.handlers), logger.propagate)
            if logger.handlers != [self.log_handler]:
                logger.handlers = [self.log_handler]
                logger.propagate = False
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
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()
        for module, original in reversed(self._saved_tqdm):
            module.tqdm = original
        self._saved_tqdm.clear()
        for name, (handlers, propagate) in self._saved_loggers.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        self._saved_loggers.clear()
        if self._captured_warnings:
            logging.captureWarnings(False)
            self._captured_warnings = False
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self.log_handler is not None:
            self.log_handler.close()
            self.log_handler = None

    # ------------------------------------------------------------ output

    def say(self, message: str) -> None:
        if self.quiet or self.console is None:
            return
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def log(self, message: str) -> None:
        if self.log_handler is not None:
            self.log_handler.emit(logging.LogRecord("lmforge", logging.INFO, "", 0, message.rstrip("\n"), None, None))

    # ------------------------------------------------------------ stages

    def stage_start(self, name: str, plugin: str, total: int | None) -> None:
        self.route_library_output()
        line = self.lines[name] = StageLine(name, plugin)
        line.total = line.expected = total
        self.current = line
        self.log(f"stage {name} ({plugin}) started")
        if self.progress is not None:
            line.task = self.progress.add_task("", total=total, stage=name, count="", rate="", eta="", info=plugin)
        elif not self.quiet:
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
        line.n, line.total = bar.n, bar.total or line.total
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
            line.n = int(step)
            if step > first_step and now > first_time:
                line.rate = (step - first_step) / (now - first_time)
            elif now > line.started:
                line.rate = step / (now - line.started)
        self.log(f"{name} step {step}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
        self._show(line)

    def _show(self, line: StageLine) -> None:
        rate = f"{line.rate:.2f} {line.unit}/s" if line.rate else ""
        eta = (line.total - line.n) / line.rate if line.rate and line.total else None
        if self.progress is not None and line.task is not None:
            count = f"{line.n}/{line.total}" if line.total else (str(line.n) if line.n else "")
            self.progress.update(line.task, completed=line.n, total=line.total, count=count, rate=rate,
                                 eta=f"{_duration(eta)} left" if eta is not None else "", info=line.metric_text())
            return
        if self.quiet or not line.total:
            return
        quarter = min(PLAIN_QUARTERS - 1, int(PLAIN_QUARTERS * line.n / line.total))
        if quarter > line.quarters_said and line.n < line.total:  # at 100% the summary line follows
            line.quarters_said = quarter
            self.say(f"lmforge: {line.name} {line.n}/{line.total} {line.unit}s ({100 * line.n // line.total}%) "
                     f"{rate or ''}, {_duration(eta)} left  {line.metric_text()}".rstrip())

    def stage_end(self, name: str, seconds: float, artifact, metrics: dict) -> None:
        line = self.lines.get(name) or StageLine(name, "")
        self.current = None
        shown, labels = [], set()
        for key, label in SUMMARY_METRICS:
            if key in metrics and label not in labels and len(shown) < 3:
                shown.append(f"{label} {_fmt(metrics[key])}")
                labels.add(label)
        summary = f"{name} done in {seconds:.1f}s" + (f": {', '.join(shown)}" if shown else "") + f" -> {artifact}"
        self.log(summary)
        if self.progress is not None and line.task is not None:
            count = f"{line.n}/{line.total}" if line.total else (str(line.n) if line.n else "")
            self.progress.update(line.task, completed=line.total or line.n or 1, total=line.total or line.n or 1,
                                 count=count, rate="", eta=f"{seconds:.1f}s", info="✓ " + "  ".join(shown))
        else:
            self.say(f"lmforge: {summary}")

    def stage_skipped(self, name: str, artifact) -> None:
        message = f"{name} skipped: complete at {artifact} (run.force=true redoes it)"
        self.log(message)
        if self.progress is not None:
            self.progress.add_task("", total=1, completed=1, stage=name, count="", rate="", eta="",
                                   info="skipped (complete)")
        else:
            self.say(f"lmforge: {message}")


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
    console = _consoles[str(run_dir)] = RunConsole(run_dir, quiet=context.quiet)
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


@hookimpl(trylast=True)
def lmforge_pipeline_end(run_dir, manifests, context):
    console = _consoles.pop(str(run_dir), None)
    if console is not None:
        console.stop()
