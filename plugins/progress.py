"""Stage-level progress on the terminal: which stage runs, which were skipped, how long each took.

A plugin on the lifecycle hooks like any other (the trainers draw their own step bars with tqdm). Quiet
runs (``run.quiet=true``) print nothing here.
"""

from __future__ import annotations

import sys
import time

from lmforge import hookimpl

_started: dict[str, float] = {}


def _say(context, message: str) -> None:
    if not context.quiet and context.is_main_process:
        print(f"lmforge: {message}", file=sys.stderr, flush=True)


@hookimpl
def lmforge_stage_start(stage_name, stage, inputs, context):
    _started[stage_name] = time.time()
    _say(context, f"stage {stage_name} ({type(stage).__name__}) started")


@hookimpl
def lmforge_stage_end(stage_name, stage, artifact, manifest, context):
    seconds = time.time() - _started.pop(stage_name, time.time())
    _say(context, f"stage {stage_name} done in {seconds:.1f}s -> {artifact}")


@hookimpl
def lmforge_stage_skipped(stage_name, artifact, manifest, context):
    _say(context, f"stage {stage_name} skipped: complete at {artifact} (run.force=true redoes it)")
