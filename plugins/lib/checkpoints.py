"""Checkpoints, written once: finding the newest complete one, writing one atomically, the stop messages.

Why one module: the HF/TRL trainers, the lean pretraining loop and PPO all keep ``checkpoint-N``
directories in the stage's work dir and resume from the newest complete one after a kill. A checkpoint is
complete when its marker file is there (``trainer_state.json`` for the HF Trainer, ``lmforge_state.json``
for lmforge's own loops, which write into ``checkpoint-N.partial`` and rename when whole), so a kill in the
middle of a save never leaves one that looks complete.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

from lmforge import LmforgeError
from lmforge.errors import DataError

TRAINER_STATE = "trainer_state.json"  # written last by transformers' Trainer
LOOP_STATE = "lmforge_state.json"  # written last by lmforge's own loops (lean pretraining, PPO)
MARKERS = (TRAINER_STATE, LOOP_STATE)
PREFIX = "checkpoint-"


def step_of(path) -> int:
    """The step N of a ``checkpoint-N`` (or ``<prefix>N``) path."""
    return int(Path(path).name.rsplit("-", 1)[1])


def checkpoints(directory, prefix: str = PREFIX, marker: str | None = None) -> list[Path]:
    """The complete ``<prefix>N`` directories under ``directory`` (with ``marker``, or any known marker file),
    oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    markers = (marker,) if marker else MARKERS
    found = [p for p in directory.glob(f"{prefix}*") if p.name[len(prefix):].isdigit()
             and any((p / name).is_file() for name in markers)]
    return sorted(found, key=step_of)


def latest_checkpoint(directory, prefix: str = PREFIX, marker: str | None = None) -> Path | None:
    """The newest complete checkpoint directory under ``directory`` (for resume), or None."""
    found = checkpoints(directory, prefix, marker)
    return found[-1] if found else None


def save_atomic(directory, step: int, write: Callable[[Path], None], state: dict | None = None, keep: int = 2,
                prefix: str = PREFIX, marker: str = LOOP_STATE) -> Path:
    """Write ``<prefix><step>`` atomically: ``write(partial_dir)``, the state marker, then a rename; keep the
    newest ``keep`` checkpoints. A kill at any point leaves no checkpoint that looks complete."""
    partial = begin_partial(directory, step, prefix)
    write(partial)
    return commit_partial(directory, step, state, keep, prefix, marker)


def begin_partial(directory, step: int, prefix: str = PREFIX) -> Path:
    """An empty ``<prefix><step>.partial`` to write into (the first half of :func:`save_atomic`, for loops
    whose processes all write into it before the main one commits)."""
    partial = Path(directory) / f"{prefix}{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def commit_partial(directory, step: int, state: dict | None = None, keep: int = 2, prefix: str = PREFIX,
                   marker: str = LOOP_STATE) -> Path:
    """Mark ``<prefix><step>.partial`` complete, rename it into place, prune older checkpoints."""
    directory = Path(directory)
    target, partial = directory / f"{prefix}{step}", directory / f"{prefix}{step}.partial"
    (partial / marker).write_text(json.dumps({"step": step, **(state or {})}))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    for old in checkpoints(directory, prefix, marker)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def loop_state(checkpoint, marker: str = LOOP_STATE) -> dict:
    """The state lmforge's loops wrote beside a checkpoint (``{"step": N, …}``)."""
    return json.loads((Path(checkpoint) / marker).read_text())


def stop_if_not_finite(loss: float, step: int, directory, stage: str = "pretrainer") -> None:
    """Stop with one line naming the last good checkpoint when the loss is NaN or infinite."""
    if not math.isfinite(loss):
        raise LmforgeError(f"{stage}: loss is {loss} at step {step}; stopped. Last good checkpoint: "
                           f"{latest_checkpoint(directory) or 'none'} (lower {stage}.learning_rate or raise "
                           "warmup_steps)")


def split_too_short(tokens: int, block_size: int, stage: str = "pretrainer") -> DataError:
    """The error for a training split with fewer tokens than one window."""
    return DataError(f"{stage}: the training split has {tokens} tokens, fewer than block_size + 1 = "
                     f"{block_size + 1}; need more text or a smaller block_size")
