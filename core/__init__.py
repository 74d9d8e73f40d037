"""lmforge: the whole life of a language model, each stage a swappable plugin.

Library use::

    import lmforge
    cfg = lmforge.compose(["aligner=orpo", "run.name=exp1"])
    result = lmforge.run(cfg)                          # the whole pipeline
    aligner = lmforge.stage("aligner", cfg)            # or one configured stage …
    lmforge.run_stage(aligner, {"model": ..., "data": ...}, "out/aligned")

Importing lmforge imports no torch: heavy libraries load only when a stage runs.
"""

from .artifacts import is_complete, read_manifest
from .config import STAGE_KINDS, build_params, compose, sample_data_path
from .errors import ConfigError, DataError, LmforgeError, MissingArtifact, PluginNotFound
from .hookspecs import hookimpl, hookspec
from .pipeline import RunResult, resolve_config, run, run_stage, stage
from .registry import plugin_manager, register_plugin, registered, registry, unregister_plugin
from .stages import (
    Aligner,
    Cleaner,
    CleaningStep,
    Drop,
    Evaluator,
    Finetuner,
    Hardware,
    Pretrainer,
    RunContext,
    Sampler,
    Stage,
    Tokenizer,
)

__version__ = "0.1.0"

__all__ = [
    "STAGE_KINDS",
    "Aligner",
    "Cleaner",
    "CleaningStep",
    "ConfigError",
    "DataError",
    "Drop",
    "Evaluator",
    "Finetuner",
    "Hardware",
    "LmforgeError",
    "MissingArtifact",
    "PluginNotFound",
    "Pretrainer",
    "RunContext",
    "RunResult",
    "Sampler",
    "Stage",
    "Tokenizer",
    "build_params",
    "compose",
    "hookimpl",
    "hookspec",
    "is_complete",
    "plugin_manager",
    "read_manifest",
    "register_plugin",
    "registered",
    "registry",
    "resolve_config",
    "run",
    "run_stage",
    "sample_data_path",
    "stage",
    "unregister_plugin",
]
