"""Run EleutherAI's lm-evaluation-harness on a stage's model, offline, on tasks defined by local files.

Why an adapter rather than our own benchmark code: lm-eval *is* the reference for how multiple-choice,
log-likelihood and generation tasks are prompted and scored (few-shot sampling, ``acc`` vs ``acc_norm``,
rolling perplexity windows, filters). Reimplementing it would give numbers nobody can compare with. What
lm-eval does not give is a guarantee that it stays off the network: its built-in tasks name Hub data sets.
So this evaluator

- wraps the artifact with lm-eval's own ``HFLM`` around a model loaded the lmforge way (safetensors only,
  ``trust_remote_code=False``, the run's device and precision);
- turns the Hugging Face Hub and ``datasets`` offline for the whole evaluation, whatever the environment
  says, so a task whose data is not on this machine fails with one line instead of downloading;
- reads task YAMLs from ``include_path`` — the main path: ``dataset_path: json`` with
  ``dataset_kwargs.data_files`` pointing at local jsonl files — and falls back to lm-eval's built-in task
  registry only for names not found there (their data must already be in the local ``datasets`` cache);
- returns lm-eval's aggregated metrics flattened as ``{"<task>/<metric>": value}`` (a metric computed under
  a filter other than ``none`` becomes ``<task>/<metric>/<filter>``; standard errors ``<task>/<metric>_stderr``).

Use it per stage: ``evaluation.pretrainer=[{name: lm_eval, tasks: [my_task], include_path: my_tasks/}]``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from lmforge import Evaluator
from lmforge.config import one_line
from lmforge.errors import ConfigError, close_match
from lmforge.params import ParamError, at_least
from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer

WHERE = "evaluation.lm_eval"


@dataclass
class LMEvalConfig:
    tasks: list[str] = field(default_factory=list)  # task, group or tag names (from include_path or lm-eval's registry)
    include_path: str | None = None  # a directory of task YAMLs whose data files are local
    num_fewshot: int | None = None  # None: each task's own setting
    limit: int | None = None  # at most this many documents per task (None: all)
    batch_size: int = 8
    max_length: int | None = None  # context window lm-eval may use (None: the model's)
    apply_chat_template: bool = False  # format prompts with the tokenizer's chat template (instruction-tuned models)
    system_instruction: str | None = None
    bootstrap_iters: int = 1000  # resamples for the standard error of non-mean metrics; 0 skips standard errors
    seed: int = 1234

    def __post_init__(self):
        if not self.tasks:
            raise ParamError("tasks: name at least one lm-eval task, group or tag")
        if self.include_path is not None and not Path(self.include_path).is_dir():
            raise ParamError(f"include_path: '{self.include_path}' is not a directory of task YAMLs")
        at_least(self, 1, "limit")


@contextlib.contextmanager
def hub_offline():
    """Block every Hugging Face Hub / ``datasets`` download for the duration, restoring the old settings after.

    The libraries read ``HF_HUB_OFFLINE`` once, at import; their request hooks consult these module
    attributes, so setting them is what actually stops a download (setting the environment variable now
    would not).
    """
    import datasets.config
    import huggingface_hub.constants

    saved = (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE,
             datasets.config.HF_DATASETS_OFFLINE)
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE,
         datasets.config.HF_DATASETS_OFFLINE) = saved


@contextlib.contextmanager
def quiet_logger(name: str, quiet: bool):
    logger = logging.getLogger(name)
    saved = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(saved)


def flatten_results(results: dict[str, dict]) -> dict[str, float]:
    """``{"task": {"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}}`` -> ``{"task/acc": 0.5, ...}``."""
    flat = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # aliases, names and "N/A" standard errors
            if not math.isfinite(value):
                continue
            metric, filter_name = key.split(",", 1)
            flat[f"{task}/{metric}" if filter_name == "none" else f"{task}/{metric}/{filter_name}"] = float(value)
    return flat


class LMEvalHarness(Evaluator):
    """lm-evaluation-harness tasks (from local task YAMLs and data files) on the artifact, fully offline."""

    name = "lm_eval"
    config_class = LMEvalConfig

    def task_manager(self):
        """Index ``include_path`` alone when it defines every requested task (indexing lm-eval's thousands of
        built-in YAMLs takes tens of seconds); otherwise add the built-in registry and check the names."""
        from lm_eval.tasks import TaskManager

        include = str(Path(self.config.include_path).resolve()) if self.config.include_path else None
        if include:
            manager = TaskManager(include_path=include, include_defaults=False)
            if not self.unknown_tasks(manager):
                return manager
        manager = TaskManager(include_path=include, include_defaults=True)
        unknown = self.unknown_tasks(manager)
        if unknown:
            known = manager.all_tasks + manager.all_groups + manager.all_tags
            where = f"in {self.config.include_path} or " if include else "in "
            raise ConfigError(f"{WHERE}.tasks: unknown task '{unknown[0]}' ({where}lm-eval's registry)"
                              f"{close_match(unknown[0], known)}")
        return manager

    def unknown_tasks(self, manager) -> list[str]:
        known = set(manager.all_tasks) | set(manager.all_groups) | set(manager.all_tags)
        return [task for task in self.config.tasks if task not in known]

    def evaluate(self, artifact, inputs, context):
        import datasets.exceptions
        import huggingface_hub.errors
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        cfg = self.config
        device = "cuda" if context is not None and context.hardware.use_cuda() else "cpu"
        with hub_offline(), quiet_logger("lm_eval", context is not None and context.quiet):
            manager = self.task_manager()
            model = load_causal_lm(artifact, context, inference=True).to(device).eval()
            lm = HFLM(pretrained=model, tokenizer=load_tokenizer(artifact), batch_size=cfg.batch_size,
                      max_length=cfg.max_length, trust_remote_code=False)
            try:
                output = lm_eval.simple_evaluate(
                    model=lm, tasks=list(cfg.tasks), task_manager=manager, num_fewshot=cfg.num_fewshot,
                    limit=cfg.limit, log_samples=False, bootstrap_iters=cfg.bootstrap_iters,
                    apply_chat_template=cfg.apply_chat_template, system_instruction=cfg.system_instruction,
                    random_seed=cfg.seed, numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed,
                    fewshot_random_seed=cfg.seed)
            except (huggingface_hub.errors.OfflineModeIsEnabled, datasets.exceptions.DatasetNotFoundError,
                    FileNotFoundError, ConnectionError) as exc:
                raise ConfigError(
                    f"{WHERE}.tasks: the data of {', '.join(cfg.tasks)} is not on this machine and lm_eval does "
                    f"not download: point the task's dataset_path/data_files at local files ({one_line(str(exc))})"
                ) from None
        return flatten_results(output["results"])
