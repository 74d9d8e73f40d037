"""REINFORCE Leave-One-Out with TRL's ``RLOOTrainer``, scored by lmforge reward functions.

Why RLOO beside GRPO: each completion's baseline is the mean reward of the *other* completions for the
same prompt — an unbiased baseline without a value model, and with a KL penalty folded into the reward.
It takes the same prompt data, reward functions and reference handling as GRPO (see ``grpo.py``), so
``aligner=rloo`` is a one-word swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .grpo import GRPOAligner, OnlineRLParams


@dataclass
class RLOOParams(OnlineRLParams):
    normalize_advantages: bool = False  # scale advantages to unit variance across the batch


class RLOOAligner(GRPOAligner):
    """RLOO: leave-one-out baselines over a group of sampled completions."""

    config_class = RLOOParams

    def trainer_classes(self):
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, RLOOTrainer

    def algorithm_arguments(self) -> dict[str, Any]:
        return {"normalize_advantages": self.config.normalize_advantages}
