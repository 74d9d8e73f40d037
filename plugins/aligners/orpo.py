"""Odds-Ratio Preference Optimisation with TRL's ``ORPOTrainer``.

Why offer ORPO beside DPO: it folds SFT and preference learning into one loss and needs no reference
model, so it costs half of DPO's memory. Same preference data as DPO, so ``aligner=orpo`` is a one-word swap.
Prompts are cut to ``max_prompt_length`` first: TRL's ORPO keeps whole prompts and truncates only the
answers, so a prompt that fills ``max_length`` leaves an empty answer and a NaN loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge import Aligner
from lmforge.params import ParamError
from lmforge.plugins.aligners.online_rl import fit_prompt
from lmforge.plugins.lib import training
from lmforge.plugins.lib.data_checks import drop_identical_pairs
from lmforge.plugins.lib.formats import preferences_for


@dataclass
class ORPOConfig(training.TrainerConfig):
    beta: float = 0.1  # weight of the odds-ratio term (lambda in the paper)
    max_length: int = 256
    max_prompt_length: int = 128  # longer prompts lose their oldest turns / first tokens (see online_rl.fit_prompt)
    format: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        if self.max_prompt_length >= self.max_length:
            raise ParamError(f"max_prompt_length: {self.max_prompt_length} leaves no room for the answer "
                              f"within max_length {self.max_length}")


def build_orpo(cfg: ORPOConfig, inputs, context):
    from datasets import Dataset
    from trl.experimental.orpo import ORPOConfig as TrlORPOConfig
    from trl.experimental.orpo import ORPOTrainer

    tokenizer = training.tokenizer_for(inputs["model"], cfg)
    pairs = preferences_for(tokenizer, inputs["data"], cfg.format)  # plain strings for a model with no template
    pairs, _ = drop_identical_pairs(pairs, str(inputs["data"]))
    for pair in pairs:
        pair["prompt"] = fit_prompt(pair["prompt"], tokenizer, cfg.max_prompt_length)
    dataset, heldout = training.split_heldout(Dataset.from_list(pairs), cfg.eval_fraction, context.seed,
                                              inputs["data"])
    args = TrlORPOConfig(**training.trainer_arguments(cfg, context, beta=cfg.beta, max_length=cfg.max_length))
    model = training.load_trained_model(inputs["model"], cfg, context, tokenizer=tokenizer)
    return ORPOTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=heldout,
                       processing_class=tokenizer, peft_config=training.peft_config(cfg))


class ORPOAligner(Aligner):
    """ORPO: preference alignment without a reference model."""

    config_class = ORPOConfig

    run = training.run_trainer(build_orpo)
    check_data = training.check_preference_data
