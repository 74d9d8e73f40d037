"""The six stage interfaces and the context a stage runs in.

A stage takes input artifacts (plain directories or files in Hugging Face formats) and writes its own
artifact into ``output_dir``. That is the whole contract, so every artifact opens with vanilla
``datasets`` / ``transformers`` and a later stage can take any earlier artifact by path::

    cleaner     text files / datasets           -> text dataset dir (parquet shards)
    tokenizer   text dataset                    -> tokenizer dir (tokenizer.json, chat template)
    pretrainer  text dataset + tokenizer dir    -> model dir (safetensors, config, generation_config)
    finetuner   model dir + SFT data            -> model dir
    aligner     model dir + preference data     -> model dir
    sampler     model dir + prompts             -> completions.jsonl

Stages are usable without Hydra: ``Pretrainer``-subclass``(max_steps=10).run(inputs, out_dir)``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from . import distributed
from .config import build_params
from .errors import MissingArtifact


@dataclass
class Hardware:
    """Where and how training runs. ``auto`` picks a GPU (bf16, SDPA) when there is one, else CPU fp32."""

    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    attn_implementation: str = "sdpa"
    compile: bool = False  # torch.compile where shapes are static (pretraining); variable-length stages stay eager
    threads: int | None = None  # torch CPU threads; None leaves torch's default

    def __post_init__(self):
        from .config import at_least, one_of

        one_of(self, "device", ("auto", "cpu", "cuda"))
        one_of(self, "precision", ("auto", "fp32", "bf16", "fp16"))
        at_least(self, 1, "threads")

    def use_cuda(self) -> bool:
        if self.device == "cpu":
            return False
        import torch

        available = torch.cuda.is_available()
        if self.device == "cuda" and not available:
            from .errors import ConfigError

            raise ConfigError("hardware.device: 'cuda' requested but no CUDA GPU is visible")
        return available

    def dtype_name(self) -> str:
        if self.precision != "auto":
            return self.precision
        if self.use_cuda():
            import torch

            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"

    def apply_threads(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)


@dataclass
class RunContext:
    """What a stage gets besides its inputs: hardware, seed, a place for checkpoints, a metrics sink."""

    stage_name: str = "stage"
    run_dir: Path | None = None
    work_dir: Path | None = None  # survives a kill: checkpoints live here, so a re-run resumes
    hardware: Hardware = field(default_factory=Hardware)
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)  # the `model` config group (architecture preset)
    config: dict[str, Any] = field(default_factory=dict)  # the whole resolved config, for reference
    quiet: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)  # last value of each metric
    rank: int = field(default_factory=distributed.rank)  # under `accelerate launch`
    world_size: int = field(default_factory=distributed.world_size)
    _metrics_file: Path | None = None

    @property
    def is_main_process(self) -> bool:
        """True on the one process (of ``accelerate launch``'s several) that writes artifacts and reports."""
        return self.rank == 0

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Record metrics (kept in the manifest and metrics.jsonl) and pass them to lmforge_log_metrics."""
        clean = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, str)) else v)
                 for k, v in metrics.items()}
        self.metrics.update(clean)
        if self._metrics_file is not None:
            with open(self._metrics_file, "a+b") as handle:
                if handle.tell() > 0:  # a line torn by a kill must not swallow this record
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        handle.write(b"\n")
                handle.write((json.dumps({"step": step, "time": time.time(), **clean}) + "\n").encode())
        from .registry import plugin_manager

        plugin_manager().hook.lmforge_log_metrics(
            stage_name=self.stage_name, step=step, metrics=clean, context=self
        )

    def checkpoint_dir(self) -> Path:
        """A directory for checkpoints that outlives an interrupted run of this stage."""
        base = self.work_dir or Path(os.environ.get("TMPDIR", "/tmp")) / f"lmforge-{self.stage_name}"
        base.mkdir(parents=True, exist_ok=True)
        return base


class Stage:
    """Base of every stage implementation.

    Subclasses set ``kind`` (through the per-kind classes below), ``config_class`` (a dataclass of typed
    parameters, or None) and implement :meth:`run`.
    """

    kind: ClassVar[str] = ""
    config_class: ClassVar[type | None] = None
    inputs: ClassVar[dict[str, str]] = {}  # required input name -> what it is
    optional_inputs: ClassVar[dict[str, str]] = {}
    # input name -> data | model | tokenizer | path (how it is resolved); unnamed ones go by their name:
    # text/data/prompts/eval_data are data, model/reward_model models, tokenizer a tokenizer, others paths
    input_kinds: ClassVar[dict[str, str]] = {}
    # top-level config sections besides its own parameters that shape its artifact (the pretrainer reads
    # `model`); with its params, inputs, seed and evaluators they make its fingerprint, and nothing else does
    reads: ClassVar[tuple[str, ...]] = ()
    # True for training stages: under `accelerate launch` every process runs them together; the others
    # (cleaning, tokenizer training, sampling …) run on the main process while the rest wait for it
    distributed: ClassVar[bool] = False

    def __init__(self, config=None, **params):
        if config is None or isinstance(config, dict):
            config = build_params(self.config_class, {**(config or {}), **params}, where=self.kind,
                                  plugin=f"{self.kind} '{type(self).__name__}'")
        self.config = config

    def run(self, inputs: dict[str, Path], output_dir: Path, context: RunContext) -> Path:
        """Read ``inputs``, write the artifact into ``output_dir`` (which exists and is empty), return it."""
        raise NotImplementedError

    def preflight(self, context: RunContext) -> None:
        """Checks that need the run's context (the model preset, the hardware), called for every stage of a
        pipeline before any of them runs; raise a one-line :class:`~lmforge.ConfigError`. Default: none."""

    def check_data(self, inputs: dict[str, Any]) -> None:
        """Content checks on the inputs that exist before the run (files and data sets the user named, not an
        earlier stage's artifact), called for every stage of a pipeline before any of them runs, so that bad
        data fails before the stages ahead of this one train; raise a one-line :class:`~lmforge.DataError`
        naming the file and line. ``inputs`` maps input names to what :meth:`check_inputs` resolves them to.
        Default: none (a stage checks its data when it reads it)."""

    def check_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Resolve each input by its kind (see :mod:`lmforge.sources`) and fail with one line when a required
        one is absent, or one cannot be found: a missing path, a glob matching nothing, a Hub id not cached.

        A data input comes back as a ``Path`` when it is one local file or directory, else as a
        ``DataSource`` (glob, mixture, Hub dataset) that ``lmforge.plugins.lib.data`` reads; a model input as a
        local directory or a Hub snapshot (``ResolvedModel``, path-like, with its commit).
        """
        from .errors import ConfigError, close_match
        from .sources import input_kind, resolve_input

        checked = {}
        for name in self.inputs:
            if inputs.get(name) in (None, "", []):
                raise MissingArtifact(f"{self.kind}: input '{name}' ({self.inputs[name]}) was not given")
        for name, value in inputs.items():
            if value is None or (isinstance(value, (str, list)) and not value):
                continue
            if name not in self.inputs and name not in self.optional_inputs:
                allowed = list(self.inputs) + list(self.optional_inputs)
                raise ConfigError(f"{self.kind}: unknown input '{name}'{close_match(name, allowed)}; "
                                  f"takes: {', '.join(allowed)}")
            checked[name] = resolve_input(input_kind(type(self), name), value, f"{self.kind}: input '{name}'")
        return checked


class Cleaner(Stage):
    kind = "cleaner"
    inputs: ClassVar[dict[str, str]] = {"text": "raw text: files (.txt/.jsonl/.json/.csv/.parquet …), a glob, a folder, a saved or Hub "
                      "dataset, or a list of those"}


class Tokenizer(Stage):
    kind = "tokenizer"
    inputs: ClassVar[dict[str, str]] = {"text": "a text dataset (the cleaner's output) or text files"}


class Pretrainer(Stage):
    kind = "pretrainer"
    distributed = True
    reads = ("model",)
    inputs: ClassVar[dict[str, str]] = {"text": "a text dataset, or a directory of token shards (lmforge's or "
                                                "datatrove's)", "tokenizer": "a tokenizer directory"}


class Finetuner(Stage):
    kind = "finetuner"
    distributed = True
    inputs: ClassVar[dict[str, str]] = {"model": "a model directory", "data": "SFT data (conversations, alpaca, prompt/completion …)"}


class Aligner(Stage):
    kind = "aligner"
    distributed = True
    inputs: ClassVar[dict[str, str]] = {"model": "a model directory", "data": "preference / feedback / prompt data"}


class Sampler(Stage):
    kind = "sampler"
    inputs: ClassVar[dict[str, str]] = {"model": "a model directory", "prompts": "prompts (.txt lines or .jsonl)"}


class Drop:
    """What a cleaning step returns to remove a document, with the reason recorded in the report."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self):
        return f"Drop({self.reason!r})"


class CleaningStep:
    """One step of the cleaner's ordered list (kind ``cleaning_step``).

    ``process(text)`` returns the (possibly rewritten) text to keep it, or ``Drop(reason)`` / ``None`` to
    remove it. Steps may keep state across documents (deduplication does).
    """

    config_class: ClassVar[type | None] = None
    name: ClassVar[str] = ""

    def __init__(self, config=None, **params):
        if config is None or isinstance(config, dict):
            config = build_params(self.config_class, {**(config or {}), **params},
                                  where=f"cleaning_step.{self.name or type(self).__name__}")
        self.config = config

    def process(self, text: str):
        raise NotImplementedError


class Evaluator:
    """A measurement of a stage's artifact, run before the artifact is sealed (kind ``evaluator``).

    ``evaluate(artifact, inputs, context)`` returns a dict of numbers; they land in ``eval.json`` inside the
    artifact and in its manifest. Parameters come validated as an instance of ``config_class``.
    """

    config_class: type | None = None
    name = ""

    def __init__(self, config=None, **params):
        if config is None or isinstance(config, dict):
            config = build_params(self.config_class, {**(config or {}), **params}, where=f"evaluation.{self.name}")
        self.config = config

    def evaluate(self, artifact: Path, inputs: dict[str, Path], context) -> dict[str, float]:
        raise NotImplementedError
