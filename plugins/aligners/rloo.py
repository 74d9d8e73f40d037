"""REINFORCE Leave-One-Out with TRL's ``RLOOTrainer``, scored by lmforge reward functions.

Why RLOO beside GRPO: each completion's baseline is the mean reward of the *other* completions for the
same prompt — an unbiased baseline without a value model, and with a KL penalty folded into the reward.
It takes the same prompt data, reward functions and reference as GRPO (``grpo.build_online_rl``), so
``aligner=rloo`` is a one-word swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lmforge import Aligner
from lmforge.plugins.aligners.grpo import OnlineRLConfig, build_online_rl
from lmforge.plugins.lib import training


@dataclass
class RLOOConfig(OnlineRLConfig):
    normalize_advantages: bool = False  # scale advantages to unit variance across the batch


class RLOOAligner(Aligner):
    """RLOO: leave-one-out baselines over a group of sampled completions."""

    config_class = RLOOConfig
    optional_inputs: ClassVar[dict[str, str]] = {"reward_model": "a reward model (sequence classification, 1 label)"}

    run = training.run_trainer(lambda cfg, inputs, context: build_online_rl(
        cfg, inputs, context, "RLOO", normalize_advantages=cfg.normalize_advantages))
