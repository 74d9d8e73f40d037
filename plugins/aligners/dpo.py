"""Direct Preference Optimisation with TRL's ``DPOTrainer``.

Why DPO as the default aligner: it learns from preference pairs directly, with no reward model and no
sampling loop, so it is the cheapest alignment that works on a laptop. The reference model is the input
model frozen (``training.reference_model``; with LoRA, the adapter-disabled base: no second copy at all).
A model without a chat template (a base model) trains on plain ``prompt``/``chosen``/``rejected``
strings. Completions end at the end-of-turn token. Every TRL loss variant is a ``loss_type`` away (``[ipo]``, ``[hinge]``, ``[sigmoid, bco_pair, sft]`` with
``loss_weights`` for MPO); ``eval_fraction`` holds pairs out and logs their reward accuracy and margins
before and after training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge import Aligner
from lmforge.plugins.lib import training
from lmforge.plugins.lib.data_checks import drop_identical_pairs
from lmforge.plugins.lib.formats import preferences_for


@dataclass
class DPOConfig(training.TrainerConfig):
    beta: float = 0.1
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])  # any of TRL's DPO loss types
    loss_weights: list[float] | None = None  # one per loss_type when combining several (e.g. MPO)
    max_length: int = 256
    format: str = "auto"


def build_dpo(cfg: DPOConfig, inputs, context, config_class=None, trainer_class=None, **algorithm):
    """A ``DPOTrainer`` (or a subclass and its config, for DPO-family aligners) on the preference pairs."""
    from datasets import Dataset

    if config_class is None:
        from trl import DPOConfig as config_class
        from trl import DPOTrainer as trainer_class

    tokenizer = training.tokenizer_for(inputs["model"], cfg)
    pairs = preferences_for(tokenizer, inputs["data"], cfg.format)  # plain strings for a model with no template
    dataset = Dataset.from_list(drop_identical_pairs(pairs, str(inputs["data"]))[0])
    dataset, heldout = training.split_heldout(dataset, cfg.eval_fraction, context.seed, inputs["data"])
    args = config_class(**training.trainer_arguments(
        cfg, context, beta=cfg.beta, loss_type=list(cfg.loss_type), max_length=cfg.max_length,
        loss_weights=list(cfg.loss_weights) if cfg.loss_weights else None, **algorithm))
    return training.reference_trainer(trainer_class, args, cfg, inputs, context, tokenizer, dataset, heldout,
                                      ("chosen_ids", "rejected_ids"))


class DPOAligner(Aligner):
    """DPO against the frozen input model."""

    config_class = DPOConfig

    run = training.run_trainer(build_dpo)
    check_data = training.check_preference_data
