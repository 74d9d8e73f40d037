"""Direct Preference Optimisation with TRL's ``DPOTrainer``.

Why DPO as the default aligner: it learns from preference pairs directly, with no reward model and no
sampling loop, so it is the cheapest alignment that works on a laptop. The reference model is a frozen
copy of the input policy made in memory: TRL would otherwise try to reload it from the model's
``_name_or_path``, which fails for lmforge's from-scratch models. Every TRL loss variant is a
``loss_type`` away (``[ipo]``, ``[hinge]``, ``[sigmoid, bco_pair, sft]`` with ``loss_weights`` for MPO);
``eval_fraction`` holds pairs out and logs their reward accuracy and margins before and after training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from lmforge import Aligner

from ..common import latest_checkpoint, metrics_callback, seed_everything, trainer_arguments
from ..models import load_causal_lm, load_tokenizer, save_model_dir
from ..formats import load_preferences


@dataclass
class DPOParams:
    max_steps: int = 20
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 5e-5
    beta: float = 0.1
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])  # any of TRL's DPO loss types
    loss_weights: list[float] | None = None  # one per loss_type when combining several (e.g. MPO)
    max_length: int = 256
    format: str = "auto"
    eval_fraction: float = 0.0  # hold out this share of pairs; report reward accuracy on them before/after
    save_steps: int = 50
    logging_steps: int = 5


class DPOAligner(Aligner):
    """DPO against a frozen in-memory copy of the input model."""

    config_class = DPOParams

    def run(self, inputs, output_dir, context):
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        cfg = self.config
        seed_everything(context.seed)
        dataset = Dataset.from_list(load_preferences(inputs["data"], cfg.format))
        heldout = None
        if cfg.eval_fraction > 0:
            split = dataset.train_test_split(test_size=cfg.eval_fraction, seed=context.seed)
            dataset, heldout = split["train"], split["test"]
        tokenizer = load_tokenizer(inputs["model"])
        policy = load_causal_lm(inputs["model"], context)
        reference = copy.deepcopy(policy).eval()
        args = DPOConfig(
            **trainer_arguments(context, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                                learning_rate=cfg.learning_rate, save_steps=cfg.save_steps,
                                logging_steps=cfg.logging_steps),
            gradient_accumulation_steps=cfg.grad_accum, beta=cfg.beta, loss_type=list(cfg.loss_type),
            loss_weights=list(cfg.loss_weights) if cfg.loss_weights else None,
            max_length=cfg.max_length, activation_checkpointing=False,
        )
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                             eval_dataset=heldout, processing_class=tokenizer, callbacks=[metrics_callback(context)])
        resume = latest_checkpoint(args.output_dir)
        if heldout is not None and resume is None:
            trainer.evaluate()  # the starting point on the held-out pairs, logged at step 0
        trainer.train(resume_from_checkpoint=resume)
        if heldout is not None:
            trainer.evaluate()
        save_model_dir(trainer.model, tokenizer, output_dir)
        return output_dir
