"""The plugin API: every hook lmforge calls, documented where it is declared.

A plugin is any module with functions decorated ``@lmforge.hookimpl`` whose names match the specs below.
Make it discoverable by naming the module under the ``lmforge`` entry point group of your package::

    [project.entry-points.lmforge]
    my_plugin = "my_package.my_module"

lmforge's own built-in plugins are registered through that same group and these same hooks.

Parameters several hooks share: ``stage_name`` (the stage's name in the pipeline: ``aligner``, or
``reward_model`` for a second aligner), ``stage`` (the configured stage object; ``stage.config`` holds its
parameters), ``inputs`` (input name -> resolved input: a path or a data source spec) and ``context`` (the
:class:`~lmforge.RunContext`: hardware, seed, work dir, metrics, ``is_main_process``). A hook implementation
may take any subset of its spec's parameters, by name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .registry import Registry
    from .stages import RunContext, Stage

hookspec = pluggy.HookspecMarker("lmforge")
hookimpl = pluggy.HookimplMarker("lmforge")

# Under ``accelerate launch`` several processes run the pipeline. Which of them call each hook:
#   every process:        pipeline_start, pipeline_end, stage_skipped, run_stage (training stages), register, …
#   main process only:    stage_start, stage_end, artifact_written, run_stage (stages that do not train)
#   the logging process:  log_metrics (lmforge's trainers log on the main process only)
# ``context.is_main_process`` tells a hook which process it is in; only the main one should write files.


@hookspec
def lmforge_register(registry: Registry) -> None:
    """Add implementations to the registry.

    :param registry: call ``registry.add(kind, name, obj)`` once per implementation. ``kind`` is a stage kind
        (``cleaner``, ``tokenizer``, ``pretrainer``, ``finetuner``, ``aligner``, ``sampler``) or any other kind
        a stage looks things up by (``cleaning_step``, ``data_format``, ``reward_function``, ``evaluator``,
        ``tracker`` …; see the kinds table in docs/write-a-plugin.md). ``obj`` is the class/function or a lazy
        ``"module:attribute"`` string, so listing plugins imports nothing heavy. Registering a (kind, name)
        that a built-in already has replaces the built-in, with a warning.
    """


@hookspec
def lmforge_config_searchpath() -> list[str]:
    """Return a list of Hydra search-path entries (``"pkg://my_package.conf"`` or ``"file:///abs/dir"``).

    Config groups found there (``aligner/my_aligner.yaml`` …) become selectable by override
    (``aligner=my_aligner``), exactly like the built-in options.
    """


@hookspec
def lmforge_stage_start(stage_name: str, stage: Stage, inputs: dict[str, Any], context: RunContext) -> None:
    """Called before a stage runs (not when a complete stage is skipped); on the main process only."""


@hookspec
def lmforge_stage_end(stage_name: str, stage: Stage, artifact: Path, manifest: dict[str, Any],
                      context: RunContext) -> None:
    """Called after a stage's artifact is complete and in place; on the main process only.

    :param artifact: the artifact directory, now in its final place.
    :param manifest: the manifest written beside it (params, inputs with hashes, fingerprint, metrics …).
    """


@hookspec
def lmforge_stage_skipped(stage_name: str, artifact: Path, manifest: dict[str, Any], context: RunContext) -> None:
    """Called (on every process) when a stage is skipped because its artifact is complete for the same config.

    :param artifact: the existing artifact directory that is reused.
    :param manifest: its manifest.
    """


@hookspec(firstresult=True)
def lmforge_run_stage(stage: Stage, inputs: dict[str, Any], output_dir: Path, context: RunContext) -> Path | None:
    """Run one stage and return its artifact path (the first non-None result wins).

    lmforge's core implements this by calling ``stage.run(inputs, output_dir, context)``. Wrap it with
    ``@hookimpl(wrapper=True)`` to time, profile, retry or otherwise surround every stage run::

        @lmforge.hookimpl(wrapper=True)
        def lmforge_run_stage(stage, inputs, output_dir, context):
            started = time.time()
            artifact = yield
            print(stage.kind, "took", time.time() - started)
            return artifact

    :param output_dir: an empty directory to write the artifact into (renamed into place afterwards); under
        ``accelerate launch`` the other processes of a training stage get a private scratch directory.
    """


@hookspec
def lmforge_log_metrics(stage_name: str, step: int | None, metrics: dict[str, Any], context: RunContext) -> None:
    """Called whenever a stage logs metrics (loss, lr, reward …). Trackers and the console display live here.

    :param step: the stage's own step (each stage counts from 0), or None for a once-only summary.
    :param metrics: metric name -> number (occasionally a string).
    """


@hookspec(warn_on_impl=DeprecationWarning(
    "lmforge_artifact_written is deprecated and will be removed: implement lmforge_stage_end, which fires at the "
    "same moment with the same artifact and manifest"))
def lmforge_artifact_written(stage_name: str, path: Path, manifest: dict[str, Any], context: RunContext) -> None:
    """Deprecated: use :func:`lmforge_stage_end` (same moment, same data). Still called, on the main process."""


@hookspec
def lmforge_pipeline_start(run_dir: Path, config: dict[str, Any], context: RunContext) -> None:
    """Called once (on every process) before the first stage, after the whole config was validated.

    Raise an ``LmforgeError`` here to refuse a run early, e.g. an unknown tracker name.

    :param run_dir: ``<run.root>/<run.name>``.
    :param config: the whole resolved config as plain dicts.
    """


@hookspec
def lmforge_pipeline_end(run_dir: Path, manifests: dict[str, dict[str, Any]], context: RunContext) -> None:
    """Called once (on every process) after every stage ran or was skipped (reports hook in here).

    :param run_dir: ``<run.root>/<run.name>``.
    :param manifests: stage name -> its manifest, in pipeline order.
    """


@hookspec
def lmforge_report_sections(run_dir: Path, manifests: dict[str, dict[str, Any]]) -> list[str]:
    """Return markdown sections for the run report, shown after its stage table (an evaluator's summary).

    Built from what the stages left on disk, so it works for skipped stages too. Return ``[]`` for none.

    :param run_dir: ``<run.root>/<run.name>``.
    :param manifests: stage name -> its manifest, in pipeline order.
    """


@hookspec
def lmforge_cli_commands() -> dict[str, tuple[str, Callable[[list[str]], int | None] | str]]:
    """Return ``{name: (one-line help, function)}`` to add ``lmforge <name> …`` subcommands.

    ``function(argv: list[str])`` receives the arguments after the command name and returns an exit code
    (or None for 0). As in ``registry.add``, it may be a lazy ``"module:function"`` string, imported only when
    its command runs, so ``lmforge --help`` imports nothing heavy. Built-in commands (``serve``, ``chat`` …)
    are added this same way.
    """
