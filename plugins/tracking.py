"""Experiment trackers fed from the ``lmforge_log_metrics`` hook: TensorBoard, Weights & Biases, Trackio.

Why one hook instead of each trainer's ``report_to``: every stage — HF/TRL trainers, lmforge's own PPO
loop, a third-party stage — logs through ``context.log_metrics``, so one tracker plugin sees the whole
pipeline under one run, with ``<stage>/<metric>`` tags. Pick trackers with ``run.trackers=[tensorboard]``,
with parameters as ``run.trackers=[{name: wandb, project: my_project}]``.

The tracker contract (kind ``tracker``; docs/write-a-plugin.md has the table):

- a class called as ``cls(run_dir, run_name)``, plus ``params=`` (an instance of its ``config_class``
  dataclass, validated like stage parameters) when it sets ``config_class``, plus ``config=`` (the whole
  resolved run config as a dict) when its ``__init__`` takes a ``config`` argument; it is opened when the
  pipeline starts, so a missing package fails before any stage runs;
- ``log(stage_name, step, metrics)`` for every ``context.log_metrics`` call: ``step`` is the stage's own step
  (each stage counts from 0) or ``None`` for summary metrics a stage logs once (its final numbers);
- ``close()`` once: when the pipeline ends, or when a stage fails (not after each stage).

Each stage counts its own steps, while wandb and trackio want one increasing ``step`` per run: ``RunSteps``
maps a stage's step onto the run's axis (each stage starts after the previous one's last step), and the
stage's own step is logged beside it as ``<stage>/step`` (wandb plots each stage's metrics against it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import logging
import os
from pathlib import Path

from lmforge import build_params, hookimpl, registry
from lmforge.config import named_spec
from lmforge.errors import ConfigError


class RunSteps:
    """One increasing step per run from per-stage steps: a stage starts after the previous stage's last step."""

    def __init__(self):
        self.offsets: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.end = 0  # the run's step after everything logged so far

    def __call__(self, stage_name: str, step) -> int:
        if stage_name not in self.offsets:
            self.offsets[stage_name] = self.end + (1 if self.end else 0)
        if step is None:  # a summary: at the stage's latest step
            step = self.last.get(stage_name, 0)
        self.last[stage_name] = max(self.last.get(stage_name, 0), int(step))
        run_step = self.offsets[stage_name] + int(step)
        self.end = max(self.end, run_step)
        return run_step


def _numeric(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardTracker:
    """Event files under ``runs/<name>/tensorboard/`` (open with ``tensorboard --logdir runs``)."""

    def __init__(self, run_dir: Path, run_name: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("run.trackers: 'tensorboard' needs the tensorboard package "
                              "(pip install 'lmforge[track]')") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        self.steps: dict[str, int] = {}

    def log(self, stage_name, step, metrics):
        if step is None:  # summary metrics: place them after the stage's last step
            step = self.steps.get(stage_name, 0)
        self.steps[stage_name] = step
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{stage_name}/{key}", value, step)
        self.writer.flush()

    def close(self):
        self.writer.close()


@dataclasses.dataclass
class WandbConfig:
    project: str = "lmforge"
    entity: str | None = None
    mode: str = "offline"  # offline (sync later with `wandb sync`), online, disabled; WANDB_MODE wins when set
    tags: list[str] = dataclasses.field(default_factory=list)


class WandbTracker:
    """Weights & Biases: one wandb run per lmforge run, the resolved config as its config, offline by default."""

    config_class = WandbConfig

    def __init__(self, run_dir: Path, run_name: str, params: WandbConfig | None = None, config: dict | None = None):
        try:
            import wandb
        except ImportError:
            raise ConfigError("run.trackers: 'wandb' needs the wandb package (pip install 'lmforge[track]')") from None
        params = params or WandbConfig()
        self.run = wandb.init(project=params.project, entity=params.entity, name=run_name, dir=str(run_dir),
                              config=config or {}, tags=params.tags or None,
                              mode=os.environ.get("WANDB_MODE", params.mode), reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))
        self.steps = RunSteps()
        self.stages: set[str] = set()

    def log(self, stage_name, step, metrics):
        values = {f"{stage_name}/{k}": v for k, v in _numeric(metrics).items()}
        if stage_name not in self.stages:  # this stage's charts use its own step as their x axis
            self.stages.add(stage_name)
            self.run.define_metric(f"{stage_name}/step")
            self.run.define_metric(f"{stage_name}/*", step_metric=f"{stage_name}/step")
        if step is None:
            self.run.summary.update(values)
        run_step = self.steps(stage_name, step)
        self.run.log({**values, f"{stage_name}/step": self.steps.last[stage_name]}, step=run_step)

    def close(self):
        self.run.finish()


@dataclasses.dataclass
class TrackioConfig:
    project: str = "lmforge"
    space_id: str | None = None  # None: local only (the dashboard reads the local database)


class TrackioTracker:
    """Trackio, the local-first tracker: one trackio run per lmforge run, with the resolved config."""

    config_class = TrackioConfig

    def __init__(self, run_dir: Path, run_name: str, params: TrackioConfig | None = None,
                 config: dict | None = None):
        try:
            import trackio
        except ImportError:
            raise ConfigError("run.trackers: 'trackio' needs the trackio package (pip install 'lmforge[track]')") \
                from None
        params = params or TrackioConfig()
        self.trackio = trackio
        with _chatter_to_log():
            self.run = trackio.init(project=params.project, name=run_name, space_id=params.space_id,
                                    config=config or {}, embed=False)
        self.steps = RunSteps()

    def log(self, stage_name, step, metrics):
        run_step = self.steps(stage_name, step)
        values = {f"{stage_name}/{k}": v for k, v in _numeric(metrics).items()}
        self.trackio.log({**values, f"{stage_name}/step": self.steps.last[stage_name]}, step=run_step)

    def close(self):
        with _chatter_to_log():
            self.trackio.finish()


@contextlib.contextmanager
def _chatter_to_log():
    """Trackio prints its status lines; they belong in the run log, not on the run's console."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    if buffer.getvalue().strip():
        logging.getLogger("lmforge.tracking").info(buffer.getvalue().strip())


@hookimpl
def lmforge_register(registry):
    registry.add("tracker", "tensorboard", TensorBoardTracker)
    registry.add("tracker", "wandb", WandbTracker)
    registry.add("tracker", "trackio", TrackioTracker)


_open: dict[str, list] = {}  # run dir -> live trackers


def _trackers(context) -> list:
    if context.run_dir is None or not context.is_main_process:
        return []
    key = str(context.run_dir)
    if key not in _open:
        specs = (context.config.get("run") or {}).get("trackers") or []
        _open[key] = [open_tracker(spec, context.run_dir, Path(key).name, context.config) for spec in specs]
    return _open[key]


def open_tracker(spec, run_dir, run_name: str, config: dict):
    """Open one ``run.trackers`` entry (``"wandb"`` or ``{name: wandb, project: x}``) under the contract above."""
    name, values = named_spec(spec, "run.trackers")
    cls = registry().get("tracker", name)
    kwargs = {}
    config_class = getattr(cls, "config_class", None)
    if config_class is not None:
        kwargs["params"] = build_params(config_class, values, where=f"run.trackers.{name}", plugin=f"tracker '{name}'")
    elif values:
        raise ConfigError(f"run.trackers.{name}.{next(iter(values))}: tracker '{name}' takes no parameters")
    try:
        takes_config = "config" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes_config = False
    if takes_config:
        kwargs["config"] = config
    return cls(run_dir, run_name, **kwargs)


@hookimpl
def lmforge_pipeline_start(run_dir, config, context):
    _trackers(context)  # open them now: an unknown or uninstallable tracker fails before any stage runs


@hookimpl
def lmforge_log_metrics(stage_name, step, metrics, context):
    for tracker in _trackers(context):
        tracker.log(stage_name, step, metrics)


@hookimpl(wrapper=True)
def lmforge_run_stage(stage, inputs, output_dir, context):
    try:
        return (yield)
    except BaseException:
        for tracker in _open.pop(str(context.run_dir), []):  # a failed run is still a finished one for the tracker
            tracker.close()
        raise


@hookimpl
def lmforge_pipeline_end(run_dir, manifests, context):
    for tracker in _open.pop(str(run_dir), []):
        tracker.close()
