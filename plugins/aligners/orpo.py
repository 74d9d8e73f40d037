"""Odds-Ratio Preference Optimisation with TRL's ``ORPOTrainer``.

Why offer ORPO beside DPO: it folds SFT and preference learning into one loss and needs no reference
model, so it costs half of DPO's memory. Same preference data as DPO, so ``aligner=orpo`` is a one-word swap.
Prompts are cut to ``max_prompt_length`` first: TRL's ORPO keeps whole prompts and truncates only the
answers, so a prompt that fills ``max_length`` leaves an empty answer and a NaN loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lmforge import Aligner
from lmforge.errors import ConfigError

from ..common import latest_checkpoint, metrics_callback, seed_everything, trainer_arguments
from ..models import load_causal_lm, load_tokenizer, save_model_dir
from ..formats import load_preferences
from .grpo import fit_prompt


@dataclass
class ORPOParams:
    max_steps: int = 20
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 5e-5
    beta: float = 0.1  # weight of the odds-ratio term (lambda in the paper)
    max_length: int = 256
    max_prompt_length: int = 128  # longer prompts lose their oldest turns / first tokens (see grpo.fit_prompt)
    format: str = "auto"
    save_steps: int = 50
    logging_steps: int = 5


class ORPOAligner(Aligner):
    """ORPO: preference alignment without a reference model."""

    config_class = ORPOParams

    def run(self, inputs, output_dir, context):
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from datasets import Dataset
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        cfg = self.config
        seed_everything(context.seed)
        if cfg.max_prompt_length >= cfg.max_length:
            raise ConfigError(f"aligner.max_prompt_length: {cfg.max_prompt_length} leaves no room for the answer "
                              f"within max_length {cfg.max_length}")
        tokenizer = load_tokenizer(inputs["model"])
        pairs = load_preferences(inputs["data"], cfg.format)
        for pair in pairs:
            pair["prompt"] = fit_prompt(pair["prompt"], tokenizer, cfg.max_prompt_length)
        dataset = Dataset.from_list(pairs)
        policy = load_causal_lm(inputs["model"], context)
        args = ORPOConfig(
            **trainer_arguments(context, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                                learning_rate=cfg.learning_rate, save_steps=cfg.save_steps,
                                logging_steps=cfg.logging_steps),
            gradient_accumulation_steps=cfg.grad_accum, beta=cfg.beta, max_length=cfg.max_length,
            activation_checkpointing=False,
        )
        trainer = ORPOTrainer(model=policy, args=args, train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[metrics_callback(context)])
        trainer.train(resume_from_checkpoint=latest_checkpoint(args.output_dir))
        save_model_dir(trainer.model, tokenizer, output_dir)
        return output_dir
