"""Aligner plugins: preference optimisation and RL against rewards."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("aligner", "dpo", "lmforge.plugins.aligners.dpo:DPOAligner")
    registry.add("aligner", "orpo", "lmforge.plugins.aligners.orpo:ORPOAligner")
    registry.add("aligner", "reward_model", "lmforge.plugins.aligners.reward_model:RewardModelTrainer")
    registry.add("aligner", "ppo", "lmforge.plugins.aligners.ppo:PPOAligner")
    registry.add("aligner", "kto", "lmforge.plugins.aligners.kto:KTOAligner")
    registry.add("aligner", "grpo", "lmforge.plugins.aligners.grpo:GRPOAligner")
    registry.add("aligner", "rloo", "lmforge.plugins.aligners.rloo:RLOOAligner")
    for name, function in (("gsm8k_answer", "gsm8k_answer"), ("format", "answer_format"), ("length", "length"),
                           ("regex_coverage", "regex_coverage")):
        registry.add("reward_function", name, f"lmforge.plugins.aligners.rewards:{function}")
