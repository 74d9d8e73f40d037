"""Kahneman-Tversky Optimisation with TRL's ``KTOTrainer``: alignment from unpaired thumbs up/down.

Why KTO: feedback in the wild is rarely a ranked pair — it is one answer marked good or bad. KTO learns
from such unpaired labels (and weights desirable against undesirable ones when they are imbalanced).
Data: records with a boolean ``label`` (or ``kto_tag``) holding a conversation whose last turn is the
judged answer — OpenAI ``messages``, ShareGPT ``conversations``, alpaca or ``prompt``/``completion`` —
or plain preference pairs, which are unpaired into a good and a bad example each. The reference model
is the input model frozen (``training.reference_model``; with LoRA, the adapter-disabled base).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmforge import Aligner
from lmforge.errors import DataError
from lmforge.params import ParamError
from lmforge.plugins.lib import training
from lmforge.plugins.lib.data import read_records

LABEL_KEYS = ("label", "kto_tag")


def load_feedback(path, fmt: str = "auto", tokenizer=None) -> list[dict[str, Any]]:
    """``{"prompt": messages, "completion": [assistant message], "label": bool}`` per judged answer; plain
    strings when ``tokenizer`` has no chat template (a base model)."""
    from lmforge.plugins.lib.formats import detect_format, load_preferences, preferences_for

    records = read_records(path)
    label_key = next((k for k in LABEL_KEYS if k in records[0]), None)
    text = tokenizer is not None and not tokenizer.chat_template
    if label_key is None:  # preference pairs: the chosen answer is desirable, the rejected one is not
        rows = []
        pairs = preferences_for(tokenizer, path, fmt) if tokenizer is not None else load_preferences(path, fmt)
        for pair in pairs:
            rows.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
            rows.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
        return rows
    unlabelled = {k: v for k, v in records[0].items() if k != label_key}
    adapter = None if text else detect_format(unlabelled, f"{path}: record 0", fmt)
    rows = []
    for index, record in enumerate(records):
        where = f"{path}: record {index + 1}"
        label = record.get(label_key)
        if not isinstance(label, bool):
            raise DataError(f"{where}: '{label_key}' must be true or false, got {label!r}")
        if text:
            rows.append({**_text_fields(record, where), "label": label})
            continue
        conversation = adapter.conversation({k: v for k, v in record.items() if k != label_key}, where)
        if len(conversation) < 2 or conversation[-1]["role"] != "assistant":
            raise DataError(f"{where}: the conversation must end with the judged assistant answer after a prompt")
        rows.append({"prompt": conversation[:-1], "completion": conversation[-1:], "label": label})
    if len({row["label"] for row in rows}) < 2:
        raise DataError(f"{path}: every record has {label_key}={rows[0]['label']}; KTO needs both good and bad examples")
    return rows


def _text_fields(record: dict, where: str) -> dict[str, str]:
    for key in ("prompt", "completion"):
        if not isinstance(record.get(key), str):
            raise DataError(f"{where}: '{key}' must be a string for a model without a chat template (plain-text "
                            "feedback); for conversations give the model one with aligner.chat_template=chatml")
    return {key: record[key] for key in ("prompt", "completion")}


@dataclass
class KTOConfig(training.TrainerConfig):
    batch_size: int = 4  # at least 2: KTO estimates its KL term from mismatched pairs within a batch
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    loss_type: str = "kto"  # kto | apo_zero_unpaired
    max_length: int = 256
    format: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        if self.batch_size < 2:
            raise ParamError(f"batch_size: {self.batch_size}; KTO needs at least 2 examples per batch for its "
                              "KL estimate")


def build_kto(cfg: KTOConfig, inputs, context):
    from datasets import Dataset
    from trl import KTOConfig as TrlKTOConfig
    from trl import KTOTrainer

    tokenizer = training.tokenizer_for(inputs["model"], cfg)
    dataset = Dataset.from_list(load_feedback(inputs["data"], cfg.format, tokenizer))
    dataset, heldout = training.split_heldout(dataset, cfg.eval_fraction, context.seed, inputs["data"])
    args = TrlKTOConfig(**training.trainer_arguments(
        cfg, context, beta=cfg.beta, desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight, loss_type=cfg.loss_type, max_length=cfg.max_length))
    return training.reference_trainer(KTOTrainer, args, cfg, inputs, context, tokenizer, dataset, heldout,
                                      ("completion_ids", "KL_completion_ids"))


class KTOAligner(Aligner):
    """KTO against the frozen input model."""

    config_class = KTOConfig

    run = training.run_trainer(build_kto)
