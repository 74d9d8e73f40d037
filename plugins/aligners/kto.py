"""Kahneman-Tversky Optimisation with TRL's ``KTOTrainer``: alignment from unpaired thumbs up/down.

Why KTO: feedback in the wild is rarely a ranked pair — it is one answer marked good or bad. KTO learns
from such unpaired labels (and weights desirable against undesirable ones when they are imbalanced).
Data: records with a boolean ``label`` (or ``kto_tag``) holding a conversation whose last turn is the
judged answer — OpenAI ``messages``, ShareGPT ``conversations``, alpaca or ``prompt``/``completion`` —
or plain preference pairs, which are unpaired into a good and a bad example each. The reference model
is a frozen in-memory copy of the input policy (TRL would reload ``_name_or_path``, which fails for a
model created from scratch).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from lmforge import Aligner
from lmforge.errors import DataError

from ..common import latest_checkpoint, metrics_callback, read_records, seed_everything, trainer_arguments
from ..models import load_causal_lm, load_tokenizer, save_model_dir

LABEL_KEYS = ("label", "kto_tag")


def load_feedback(path, fmt: str = "auto") -> list[dict[str, Any]]:
    """``{"prompt": messages, "completion": [assistant message], "label": bool}`` per judged answer."""
    from ..formats import detect_format, load_preferences

    records = read_records(path)
    label_key = next((k for k in LABEL_KEYS if k in records[0]), None)
    if label_key is None:  # preference pairs: the chosen answer is desirable, the rejected one is not
        rows = []
        for pair in load_preferences(path, fmt):
            rows.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
            rows.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
        return rows
    unlabelled = {k: v for k, v in records[0].items() if k != label_key}
    adapter = detect_format(unlabelled, f"{path}: record 0", fmt)
    rows = []
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        label = record.get(label_key)
        if not isinstance(label, bool):
            raise DataError(f"{where}: '{label_key}' must be true or false, got {label!r}")
        conversation = adapter.conversation({k: v for k, v in record.items() if k != label_key}, where)
        if len(conversation) < 2 or conversation[-1]["role"] != "assistant":
            raise DataError(f"{where}: the conversation must end with the judged assistant answer after a prompt")
        rows.append({"prompt": conversation[:-1], "completion": conversation[-1:], "label": label})
    if len({row["label"] for row in rows}) < 2:
        raise DataError(f"{path}: every record has {label_key}={rows[0]['label']}; KTO needs both good and bad examples")
    return rows


@dataclass
class KTOParams:
    max_steps: int = 20
    batch_size: int = 4  # at least 2: KTO estimates its KL term from mismatched pairs within a batch
    grad_accum: int = 1
    learning_rate: float = 5e-5
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    loss_type: str = "kto"  # kto | apo_zero_unpaired
    max_length: int = 256
    format: str = "auto"
    save_steps: int = 50
    logging_steps: int = 5


class KTOAligner(Aligner):
    """KTO against a frozen in-memory copy of the input model."""

    config_class = KTOParams

    def run(self, inputs, output_dir, context):
        from datasets import Dataset
        from lmforge.errors import ConfigError
        from trl import KTOConfig, KTOTrainer

        cfg = self.config
        if cfg.batch_size < 2:
            raise ConfigError("aligner.batch_size: KTO needs at least 2 examples per batch for its KL estimate")
        seed_everything(context.seed)
        dataset = Dataset.from_list(load_feedback(inputs["data"], cfg.format))
        tokenizer = load_tokenizer(inputs["model"])
        policy = load_causal_lm(inputs["model"], context)
        reference = copy.deepcopy(policy).eval()
        args = KTOConfig(
            **trainer_arguments(context, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                                learning_rate=cfg.learning_rate, save_steps=cfg.save_steps,
                                logging_steps=cfg.logging_steps),
            gradient_accumulation_steps=cfg.grad_accum, beta=cfg.beta, desirable_weight=cfg.desirable_weight,
            undesirable_weight=cfg.undesirable_weight, loss_type=cfg.loss_type, max_length=cfg.max_length,
            activation_checkpointing=False,
        )
        trainer = KTOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                             processing_class=tokenizer, callbacks=[metrics_callback(context)])
        trainer.train(resume_from_checkpoint=latest_checkpoint(args.output_dir))
        save_model_dir(trainer.model, tokenizer, output_dir)
        return output_dir
