"""The ``hf_generate`` sampler: prompts in, ``completions.jsonl`` out, through lmforge's one generation module.

Batches, ``n`` samples per prompt, stop strings, best-of-N with a ``reward_model`` input (``best_of: K``
samples K per prompt and keeps the ``n`` with the highest reward) and retrieval when unsure; the
generation itself is :mod:`lmforge.plugins.lib.generation`.
"""

from __future__ import annotations

import time
from typing import ClassVar

from lmforge import Sampler
from lmforge.plugins.lib.formats import load_prompts
from lmforge.plugins.lib.generation import (
    REWARD_MODEL_INPUT,
    GenerateConfig,
    check_best_of_input,
    rerank_best_of,
    sample,
    sampling_metrics,
    with_system_prompt,
    write_completions,
)
from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer, seed_everything


class HFGenerateSampler(Sampler):
    """Samples completions per prompt in left-padded batches and writes completions.jsonl."""

    config_class = GenerateConfig
    optional_inputs: ClassVar[dict[str, str]] = REWARD_MODEL_INPUT

    def __init__(self, config=None, **params):
        super().__init__(config, **params)
        self.retrieval = None
        if self.config.retrieval is not None:  # bad retrieval settings fail before any stage runs
            from lmforge.config import build_params
            from lmforge.plugins.retrieval.when_unsure import RetrievalConfig, build_retriever

            self.retrieval = build_params(RetrievalConfig, dict(self.config.retrieval), where="sampler.retrieval")
            self.retriever = build_retriever(self.retrieval)

    def run(self, inputs, output_dir, context):
        cfg = self.config
        check_best_of_input(cfg, inputs)
        seed_everything(context.seed if cfg.seed is None else cfg.seed)
        tokenizer = load_tokenizer(inputs["model"])
        model = load_causal_lm(inputs["model"], context).eval()
        device = "cuda" if context.hardware.use_cuda() else None
        if device:
            model = model.to(device)
        prompts = load_prompts(inputs["prompts"], cfg.format)[: cfg.max_prompts]
        started = time.perf_counter()
        if self.retrieval is not None:
            from lmforge.plugins.retrieval.when_unsure import sample_when_unsure

            rows = sample_when_unsure(model, tokenizer, prompts, cfg, self.retrieval, self.retriever,
                                      progress=not context.quiet)
        else:
            rows = sample(model, tokenizer, prompts, cfg, progress=not context.quiet)
        seconds = time.perf_counter() - started
        for row in rows:
            row["prompt"] = with_system_prompt(row["prompt"], cfg.system_prompt)
        if inputs.get("reward_model"):
            rows = rerank_best_of(rows, inputs["reward_model"], cfg.n, cfg.reward_batch_size, device)
        write_completions(rows, output_dir)
        metrics = sampling_metrics(prompts, rows, seconds)
        if self.retrieval is not None:
            metrics["retrieval_fired_share"] = sum(r["retrieval"]["fired"] for r in rows) / max(len(rows), 1)
        context.log_metrics(metrics)
        return output_dir
