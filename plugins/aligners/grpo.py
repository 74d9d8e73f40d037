"""Group Relative Policy Optimisation with TRL's ``GRPOTrainer``, scored by lmforge reward functions.

Why GRPO: it needs no value model and no learned reward model — the policy samples a group of answers
per prompt, each is scored by reward functions (see ``rewards.py``: an exact GSM8K answer, a format,
a length target, a reward model dir, with weights), and an answer's advantage is its reward relative to
its group. This file also holds what GRPO and RLOO share on top of ``online_rl`` (``build_online_rl``, used
by ``rloo.py``):

* **Prompts and rewards** as every online-RL aligner takes them (``online_rl``: the same data, system
  prompt, prompt fitting and ``rewards: [NAME, NAME:WEIGHT]`` as PPO).
* **Reference model.** With ``beta > 0`` and no LoRA, the reference is ``training.reference_model``, as for
  DPO and KTO: the input model fitted to the tokenizer (embeddings resized for tokens a ``chat_template``
  added), frozen. TRL's trainers take no reference argument, so ``online_rl.reference_for_trl`` hands it over
  while they are built. With LoRA it is the adapter-disabled base.
* **Resume.** Checkpoints go to the stage's work dir; a re-run resumes from the newest one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lmforge import Aligner
from lmforge.params import ParamError
from lmforge.plugins.aligners.online_rl import (
    PromptsAndRewards,
    check_prompts_and_rewards,
    check_rewards,
    online_prompts,
    reference_for_trl,
)
from lmforge.plugins.aligners.rewards import for_trl, reward_components
from lmforge.plugins.lib import training


@dataclass
class OnlineRLConfig(training.TrainerConfig, PromptsAndRewards):
    batch_size: int = 8  # completions per device step: a multiple of num_generations
    learning_rate: float = 1e-5
    num_generations: int = 4  # completions sampled per prompt (the group)
    beta: float = 0.04  # KL penalty to the input model; 0 drops the reference model
    max_completion_length: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_iterations: int = 1  # optimisation passes over each generated batch
    epsilon: float = 0.2  # clip range of the policy ratio

    def __post_init__(self):
        training.check_trainer_params(self)
        check_prompts_and_rewards(self)
        if self.num_generations < 2 or (self.batch_size * self.grad_accum) % self.num_generations:
            raise ParamError(f"batch_size: batch_size x grad_accum ({self.batch_size} x {self.grad_accum}) must "
                              f"be a multiple of num_generations ({self.num_generations}, at least 2)")


@dataclass
class GRPOConfig(OnlineRLConfig):
    loss_type: str = "dapo"  # grpo | dapo | dr_grpo | bnpo | ... (TRL's GRPO loss types)
    scale_rewards: str = "group"  # group | batch | none


def build_online_rl(cfg: OnlineRLConfig, inputs, context, trainer: str, **algorithm):
    """A GRPO-family trainer (``trainer``: TRL's ``GRPO``, ``RLOO`` …): prompts with their columns, reward
    functions, the reference, the shared and sampling knobs."""
    import trl
    from datasets import Dataset

    config_class, trainer_class = getattr(trl, f"{trainer}Config"), getattr(trl, f"{trainer}Trainer")

    tokenizer = training.tokenizer_for(inputs["model"], cfg)
    components = reward_components(cfg.rewards, cfg.reward_params, inputs.get("reward_model"),
                                   cfg.reward_model_weight)
    rows = online_prompts(inputs["data"], cfg, tokenizer)
    check_rewards(components, rows[0])
    dataset, heldout = training.split_heldout(Dataset.from_list(rows), cfg.eval_fraction, context.seed, inputs["data"])
    policy = training.load_trained_model(inputs["model"], cfg, context, tokenizer=tokenizer)
    reference = training.reference_model(inputs["model"], cfg, context, tokenizer) if cfg.beta > 0 else None
    args = config_class(**training.trainer_arguments(
        cfg, context, num_generations=cfg.num_generations, beta=cfg.beta,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_k=cfg.top_k,
        top_p=cfg.top_p, num_iterations=cfg.num_iterations, epsilon=cfg.epsilon,
        reward_weights=[weight for _, _, weight in components], **algorithm))
    with reference_for_trl(trainer_class, reference):
        return trainer_class(model=policy, reward_funcs=[for_trl(name, fn) for name, fn, _ in components],
                             args=args, train_dataset=dataset, eval_dataset=heldout, processing_class=tokenizer,
                             peft_config=training.peft_config(cfg))


class GRPOAligner(Aligner):
    """GRPO: sample a group per prompt, score with reward functions, reinforce the better-than-group."""

    config_class = GRPOConfig
    optional_inputs: ClassVar[dict[str, str]] = {"reward_model": "a reward model (sequence classification, 1 label)"}

    run = training.run_trainer(lambda cfg, inputs, context: build_online_rl(
        cfg, inputs, context, "GRPO", loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards))
