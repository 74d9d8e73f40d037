"""Evaluations run on a stage's artifact before it is sealed: perplexity, GSM8K, reward accuracy, win rate.

Why a wrapper around the stage run rather than a stage of its own: the numbers belong to the artifact they
measure. The wrapper runs after the stage has written its artifact into the ``.partial`` directory and
before lmforge renames it into place, so ``eval.json`` sits inside the artifact, the metrics land in its
manifest (and in the report and trackers, through the metrics hook), and a failed evaluation leaves no
artifact looking complete. Choose evaluators per stage name::

    evaluation:
      pretrainer: [{name: perplexity, text: held_out.jsonl}]
      aligner: [{name: win_rate, judge: runs/rm/reward_model}, {name: gsm8k, limit: 50}]

Each evaluator is a plugin of kind ``evaluator``: a class with a ``config_class`` and
``evaluate(artifact, inputs, context) -> dict`` of numbers (the base class is ``lmforge.Evaluator``; it
stays importable from here). Evaluators add their own sections to the run report through the
``lmforge_report_sections`` hook.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge import Evaluator, hookimpl, registry
from lmforge.config import named_spec
from lmforge.errors import ConfigError
from lmforge.plugins.evaluators import overlap
from lmforge.plugins.lib.data import iter_texts, read_records
from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer


@dataclass
class PerplexityConfig:
    text: str = "???"  # held-out text: any file or dataset the cleaner reads (not the training text!)
    text_field: str = "text"
    max_documents: int = 64
    block_size: int = 256


class Perplexity(Evaluator):
    """Token-level loss, perplexity and bits per byte of a model on held-out text (tokenizer-independent)."""

    name = "perplexity"
    config_class = PerplexityConfig

    def evaluate(self, artifact, inputs, context):
        import torch

        cfg = self.config
        tokenizer, model = load_tokenizer(artifact), load_causal_lm(artifact, context, inference=True).eval()
        texts = [t for batch in iter_texts(cfg.text, cfg.text_field) for t in batch][: cfg.max_documents]
        total_nll = total_tokens = total_bytes = 0.0
        with torch.no_grad():
            for text in texts:
                ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                total_bytes += len(text.encode("utf-8"))
                for start in range(0, len(ids) - 1, cfg.block_size):
                    chunk = torch.tensor([ids[start:start + cfg.block_size + 1]], device=model.device)
                    if chunk.shape[1] < 2:
                        continue
                    loss = model(input_ids=chunk, labels=chunk).loss.item()
                    total_nll += loss * (chunk.shape[1] - 1)
                    total_tokens += chunk.shape[1] - 1
        loss = total_nll / max(total_tokens, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50)),
                "bits_per_byte": total_nll / math.log(2) / max(total_bytes, 1), "tokens": total_tokens}


@dataclass
class GSM8KConfig:
    data: str = "???"  # GSM8K jsonl: {"question", "answer" ending in "#### <n>"}
    limit: int = 50
    max_new_tokens: int = 256
    batch_size: int = 8
    system_prompt: str | None = None


class GSM8K(Evaluator):
    """Exact match of the final number (``#### n``, else the last number) on GSM8K-style questions."""

    name = "gsm8k"
    config_class = GSM8KConfig

    def evaluate(self, artifact, inputs, context):
        from lmforge.plugins.aligners.rewards import final_answer
        from lmforge.plugins.lib.generation import GenerateConfig, sample

        records = read_records(self.config.data)[: self.config.limit]
        for index, record in enumerate(records):
            if "question" not in record or "answer" not in record:
                raise ConfigError(f"evaluation.gsm8k.data: {self.config.data}: record {index + 1} needs question/answer")
        tokenizer, model = load_tokenizer(artifact), load_causal_lm(artifact, context, inference=True).eval()
        params = GenerateConfig(do_sample=False, max_new_tokens=self.config.max_new_tokens,
                                batch_size=self.config.batch_size, system_prompt=self.config.system_prompt)
        rows = sample(model, tokenizer, [[{"role": "user", "content": r["question"]}] for r in records], params)
        correct = [final_answer(row["completion"]) == final_answer(r["answer"]) for row, r in zip(rows, records)]
        return {"exact_match": sum(correct) / max(len(correct), 1), "questions": len(correct)}


@dataclass
class RewardAccuracyConfig:
    data: str = "???"  # held-out preference pairs (any format load_preferences reads)
    limit: int = 200


class RewardAccuracy(Evaluator):
    """Share of held-out pairs where a reward-model artifact scores chosen above rejected."""

    name = "reward_accuracy"
    config_class = RewardAccuracyConfig

    def evaluate(self, artifact, inputs, context):
        from lmforge.plugins.aligners.reward_model import (  # the reward model's own report
            RewardScorer,
            pairwise_accuracy,
        )
        from lmforge.plugins.lib.formats import load_preferences

        pairs = load_preferences(self.config.data)[: self.config.limit]
        return pairwise_accuracy(RewardScorer.from_dir(artifact, context), pairs)


BUILTIN = (Perplexity, GSM8K, RewardAccuracy)


@hookimpl
def lmforge_register(registry):
    for cls in BUILTIN:
        registry.add("evaluator", cls.name, cls)
    registry.add("evaluator", "lm_eval", "lmforge.plugins.evaluators.lm_eval:LMEvalHarness")
    registry.add("evaluator", "answers", "lmforge.plugins.evaluators.stage_effects:Answers")
    registry.add("evaluator", "win_rate", "lmforge.plugins.evaluators.stage_effects:WinRate")
    registry.add("evaluator", "language_map", "lmforge.plugins.evaluators.language_map:LanguageMapEvaluator")


def evaluators_for(stage_name: str, config: dict[str, Any]) -> list[Evaluator]:
    specs = (config.get("evaluation") or {}).get(stage_name) or []
    evaluators, first_at = [], {}
    for index, spec in enumerate(specs):
        name, params = named_spec(spec, f"evaluation.{stage_name}[{index}]")
        if name in first_at:  # its metrics (eval/<name>/...) would silently replace the first one's
            raise ConfigError(f"evaluation.{stage_name}[{index}]: '{name}' is already listed at "
                              f"[{first_at[name]}]; each evaluator may run once per stage")
        first_at[name] = index
        evaluators.append(registry().get("evaluator", name)(params))
    return evaluators


@hookimpl
def lmforge_pipeline_start(run_dir, config, context):
    for stage_name in (config.get("evaluation") or {}):
        if stage_name not in overlap.SETTINGS:
            evaluators_for(stage_name, config)  # unknown evaluators / parameters fail before any stage runs
    overlap.check_run(config, context.is_main_process)  # held-out items found in training data: warn or stop


@hookimpl(wrapper=True)
def lmforge_run_stage(stage, inputs, output_dir, context):
    artifact = yield
    evaluators = evaluators_for(context.stage_name, context.config)
    if evaluators and context.is_main_process:  # other ranks of `accelerate launch` write no artifact
        results = {}
        for evaluator in evaluators:
            metrics = evaluator.evaluate(Path(output_dir), inputs, context)
            results[evaluator.name] = metrics
            context.log_metrics({f"eval/{evaluator.name}/{k}": v for k, v in metrics.items()})
        overlap.record(context.stage_name, context, results)  # the plan-time overlap check's result
        (Path(output_dir) / "eval.json").write_text(json.dumps(results, indent=2))
    return artifact


@hookimpl
def lmforge_report_sections(run_dir, manifests):
    """What each stage changed in the model's answers, and held-out items found in the training data: the
    sections the held-out evaluators contribute."""
    from lmforge.plugins.evaluators import answers_report

    sections = [answers_report.markdown_section(run_dir, manifests), overlap.report_section(run_dir, manifests)]
    return [section for section in sections if section]
