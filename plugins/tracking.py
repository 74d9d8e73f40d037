"""Experiment trackers fed from the ``lmforge_log_metrics`` hook: TensorBoard, Weights & Biases, Trackio.

Why one hook instead of each trainer's ``report_to``: every stage — HF/TRL trainers, lmforge's own PPO
loop, a third-party stage — logs through ``context.log_metrics``, so one tracker plugin sees the whole
pipeline under one run, with ``<stage>/<metric>`` tags. Pick trackers with ``run.trackers=[tensorboard]``;
a third-party tracker registers kind ``tracker`` with a class taking ``(run_dir, run_name)`` and offering
``log(stage_name, step, metrics)`` and ``close()``.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmforge import hookimpl, registry
from lmforge.errors import ConfigError


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


class WandbTracker:
    """Weights & Biases, offline unless ``WANDB_MODE`` says otherwise (sync later with ``wandb sync``)."""

    def __init__(self, run_dir: Path, run_name: str):
        try:
            import wandb
        except ImportError:
            raise ConfigError("run.trackers: 'wandb' needs the wandb package (pip install wandb)") from None
        os.environ.setdefault("WANDB_MODE", "offline")
        self.run = wandb.init(project="lmforge", name=run_name, dir=str(run_dir), reinit=True)

    def log(self, stage_name, step, metrics):
        self.run.log({f"{stage_name}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})

    def close(self):
        self.run.finish()


class TrackioTracker:
    """Trackio, the local-first tracker (its dashboard reads the local database)."""

    def __init__(self, run_dir: Path, run_name: str):
        try:
            import trackio
        except ImportError:
            raise ConfigError("run.trackers: 'trackio' needs the trackio package (pip install trackio)") from None
        self.trackio = trackio
        trackio.init(project="lmforge", name=run_name)

    def log(self, stage_name, step, metrics):
        self.trackio.log({f"{stage_name}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})

    def close(self):
        self.trackio.finish()


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
        names = (context.config.get("run") or {}).get("trackers") or []
        _open[key] = [registry().get("tracker", name)(context.run_dir, Path(key).name) for name in names]
    return _open[key]


@hookimpl
def lmforge_pipeline_start(run_dir, config, context):
    _trackers(context)  # open them now: an unknown or uninstallable tracker fails before any stage runs


@hookimpl
def lmforge_log_metrics(stage_name, step, metrics, context):
    for tracker in _trackers(context):
        tracker.log(stage_name, step, metrics)


@hookimpl
def lmforge_pipeline_end(run_dir, manifests, context):
    for tracker in _open.pop(str(run_dir), []):
        tracker.close()
