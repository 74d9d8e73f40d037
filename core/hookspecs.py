"""The plugin API: every hook lmforge calls, documented where it is declared.

A plugin is any module with functions decorated ``@lmforge.hookimpl`` whose names match the specs below.
Make it discoverable by naming the module under the ``lmforge`` entry point group of your package::

    [project.entry-points.lmforge]
    my_plugin = "my_package.my_module"

lmforge's own built-in plugins are registered through that same group and these same hooks.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("lmforge")
hookimpl = pluggy.HookimplMarker("lmforge")


@hookspec
def lmforge_register(registry):
    """Add implementations to the registry.

    Call ``registry.add(kind, name, obj)`` once per implementation. ``kind`` is a stage kind
    (``cleaner``, ``tokenizer``, ``pretrainer``, ``finetuner``, ``aligner``, ``sampler``) or any other
    kind a stage looks things up by (``cleaning_step``, ``data_format``, ``reward_function`` …). ``obj`` is
    the class/function or a lazy ``"module:attribute"`` string, so listing plugins imports nothing heavy.
    """


@hookspec
def lmforge_config_searchpath():
    """Return a list of Hydra search-path entries (``"pkg://my_package.conf"`` or ``"file:///abs/dir"``).

    Config groups found there (``aligner/my_aligner.yaml`` …) become selectable by override
    (``aligner=my_aligner``), exactly like the built-in options.
    """


@hookspec
def lmforge_stage_start(stage_name, stage, inputs, context):
    """Called before a stage runs (not called when a complete stage is skipped).

    Under ``accelerate launch`` every process runs every stage; the artifact/stage-end/pipeline hooks fire
    on the main process only, the others on all — check ``context.is_main_process`` before writing files.
    """


@hookspec
def lmforge_stage_end(stage_name, stage, artifact, manifest, context):
    """Called after a stage's artifact is complete and in place; ``manifest`` is its manifest dict."""


@hookspec
def lmforge_stage_skipped(stage_name, artifact, manifest, context):
    """Called when a stage is skipped because its artifact is already complete for the same config."""


@hookspec(firstresult=True)
def lmforge_run_stage(stage, inputs, output_dir, context):
    """Run one stage and return its artifact path (the first non-None result wins).

    lmforge's core implements this by calling ``stage.run(inputs, output_dir, context)``. Wrap it with
    ``@hookimpl(wrapper=True)`` to time, profile, retry or otherwise surround every stage run::

        @lmforge.hookimpl(wrapper=True)
        def lmforge_run_stage(stage, inputs, output_dir, context):
            started = time.time()
            artifact = yield
            print(stage.kind, "took", time.time() - started)
            return artifact
    """


@hookspec
def lmforge_log_metrics(stage_name, step, metrics, context):
    """Called whenever a stage logs metrics (loss, lr, reward …). Trackers and progress live here."""


@hookspec
def lmforge_artifact_written(stage_name, path, manifest, context):
    """Called when an artifact directory has been atomically moved into place."""


@hookspec
def lmforge_pipeline_start(run_dir, config, context):
    """Called once before the first stage of a pipeline (after the whole config was validated).

    Raise an ``LmforgeError`` here to refuse a run early, e.g. an unknown tracker name.
    """


@hookspec
def lmforge_pipeline_end(run_dir, manifests, context):
    """Called once after every stage of a pipeline ran or was skipped (reports hook in here)."""


@hookspec
def lmforge_cli_commands():
    """Return ``{name: (one-line help, function)}`` to add ``lmforge <name> …`` subcommands.

    ``function(argv: list[str])`` receives the arguments after the command name and returns an exit code
    (or None for 0). Built-in commands (``serve``, ``chat`` …) are added this same way.
    """
