"""Supervised fine-tuning with TRL's ``SFTTrainer`` and loss on the assistant's turns only.

Why TRL: its SFT trainer reads conversations, renders them with the tokenizer's chat template and uses the
template's ``{% generation %}`` markers to mask everything but the assistant's replies (plus the
end-of-turn token, so the model learns to stop). lmforge feeds it conversations from any supported data
format (see ``lmforge.plugins.formats``), adds the configured system prompt / identity, and resumes from
the last checkpoint after a kill.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge import Finetuner

from ..common import latest_checkpoint, load_causal_lm, load_tokenizer, metrics_callback, save_model_dir
from ..common import seed_everything, trainer_arguments
from ..formats import load_conversations


@dataclass
class SFTParams:
    max_steps: int = 30
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 5e-4
    warmup_steps: int = 0
    lr_scheduler: str = "cosine"
    max_length: int = 256  # longer conversations are truncated from the end (their first turns are kept)
    packing: bool = False
    format: str = "auto"  # data_format name, or auto-detect
    system_prompt: str | None = None  # added to conversations that have no system turn
    placeholders: dict[str, str] = field(default_factory=dict)  # fills {{name}} / {{author}} in the data
    eval_fraction: float = 0.0
    save_steps: int = 50
    logging_steps: int = 10


class SFTFinetuner(Finetuner):
    """Full fine-tuning with assistant-only loss (TRL SFTTrainer)."""

    config_class = SFTParams

    def run(self, inputs, output_dir, context):
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        cfg = self.config
        seed_everything(context.seed)
        conversations = load_conversations(inputs["data"], cfg.format, cfg.system_prompt, cfg.placeholders)
        dataset = Dataset.from_dict({"messages": conversations})
        evaluation = None
        if cfg.eval_fraction > 0:
            split = dataset.train_test_split(test_size=cfg.eval_fraction, seed=context.seed)
            dataset, evaluation = split["train"], split["test"]
        tokenizer = load_tokenizer(inputs["model"])
        model = load_causal_lm(inputs["model"], context)
        args = SFTConfig(
            **trainer_arguments(context, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                                learning_rate=cfg.learning_rate, save_steps=cfg.save_steps,
                                logging_steps=cfg.logging_steps),
            gradient_accumulation_steps=cfg.grad_accum, warmup_steps=cfg.warmup_steps,
            lr_scheduler_type=cfg.lr_scheduler, max_length=cfg.max_length, packing=cfg.packing,
            assistant_only_loss=True, activation_checkpointing=False,
            eval_strategy="steps" if evaluation is not None else "no",
            eval_steps=max(cfg.save_steps, 1),
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=evaluation,
                             processing_class=tokenizer, callbacks=[metrics_callback(context)])
        trainer.train(resume_from_checkpoint=latest_checkpoint(args.output_dir))
        if evaluation is not None:
            context.log_metrics(trainer.evaluate(), step=trainer.state.global_step)
        save_model_dir(trainer.model, tokenizer, output_dir)
        return output_dir
