"""Reward model training with TRL's ``RewardTrainer``: preference pairs in, a scalar-scoring model dir out.

Why: RLHF optimises a policy against a learned reward. The reward model is the policy's own network with
a one-output sequence-classification head (``num_labels=1``), initialised from the input model dir so it
reads text with the very tokenizer and chat template the policy writes with, and trained with the
Bradley-Terry loss ``-log sigmoid(r(chosen) - r(rejected))``. TRL's trainer brings the loss, batching,
checkpoints and resume; lmforge feeds it pairs from any supported format (prompt/chosen/rejected,
ShareGPT pairs, HH-RLHF whole dialogues, via :func:`lmforge.plugins.lib.formats.load_preferences`), holds out
a slice of the pairs and reports pairwise accuracy on it: the fraction of held-out pairs whose chosen
answer scores higher, measured with :class:`RewardScorer`, the same scorer PPO uses at run time.

The output is a plain model dir (``model.safetensors``, ``config.json`` naming a ``*ForSequenceClassification``
architecture with ``num_labels=1`` and ``pad_token_id``, tokenizer files) that
``AutoModelForSequenceClassification.from_pretrained`` opens, and that TRL's GRPO/RLOO accept as a reward.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge import Aligner
from lmforge.errors import DataError
from lmforge.plugins.lib import training
from lmforge.plugins.lib.data_checks import drop_identical_pairs
from lmforge.plugins.lib.formats import load_preferences
from lmforge.plugins.lib.models import load_tokenizer


@dataclass
class RewardModelConfig(training.TrainerConfig):
    max_steps: int = 50
    batch_size: int = 8
    learning_rate: float = 1e-4
    logging_steps: int = 10
    eval_fraction: float = 0.1  # held-out pairs for the pairwise accuracy report
    max_length: int = 512  # pairs with a longer side are left out of training (TRL filters them)
    center_rewards_coefficient: float | None = None  # pulls mean reward towards 0 (Eisenstein et al., 2023)
    format: str = "auto"


def _dtype(context):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(context.hardware.dtype_name(), torch.float32)


def load_reward_model(path, context=None, trained_head: bool = False):
    """A sequence-classification model with one output from ``path`` (a reward model or a causal LM dir).

    Loading a causal LM dir keeps its backbone and adds a fresh scoring head (``trained_head=True`` refuses
    that: scoring with an untrained head would be noise); ``pad_token_id`` is taken from the tokenizer beside
    it, since the head pools the last non-pad token.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    tokenizer = load_tokenizer(path)
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if trained_head and not is_classifier:
        raise DataError(f"{path}: not a reward model (architectures: {', '.join(config.architectures or [])}); "
                        "expected a *ForSequenceClassification model such as aligner=reward_model writes")
    if is_classifier and getattr(config, "num_labels", 1) != 1:
        raise DataError(f"{path}: a sequence classifier with num_labels={config.num_labels}; a reward model "
                        "needs exactly one output")
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=1, pad_token_id=tokenizer.pad_token_id, use_safetensors=True,
        trust_remote_code=False, dtype=_dtype(context) if context is not None else None,
        attn_implementation=context.hardware.attn_implementation if context is not None else "sdpa",
    )
    return model, tokenizer


class RewardScorer:
    """Scores (prompt messages, assistant answer) pairs with a reward model, in batches, without gradients.

    Text goes through the reward model's own chat template exactly as ``RewardTrainer`` rendered it in
    training (prompt + the answer as an assistant turn); sequences longer than ``max_length`` keep their
    end, where the score is read.
    """

    def __init__(self, model, tokenizer, max_length: int = 512, batch_size: int = 16):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size = max_length, batch_size

    @classmethod
    def from_dir(cls, path, context=None, **kwargs) -> RewardScorer:
        model, tokenizer = load_reward_model(path, context, trained_head=True)
        return cls(model, tokenizer, **kwargs)

    def token_ids(self, prompt: list[dict], answer) -> list[int]:
        answer = [{"role": "assistant", "content": answer}] if isinstance(answer, str) else list(answer)
        ids = self.tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=False)
        return list(ids)[-self.max_length:]

    def score(self, prompts: list[list[dict]], answers: list) -> list[float]:
        import torch

        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        scores: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = [self.token_ids(p, a) for p, a in zip(prompts[start:start + self.batch_size],
                                                          answers[start:start + self.batch_size])]
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                attention[row, :len(ids)] = 1
            with torch.no_grad():
                logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            scores.extend(logits[:, 0].float().cpu().tolist())
        return scores


def pairwise_accuracy(scorer: RewardScorer, pairs: list[dict]) -> dict[str, float]:
    """Fraction of pairs whose chosen answer outscores the rejected one, and the mean score margin."""
    prompts = [p["prompt"] for p in pairs]
    chosen = scorer.score(prompts, [p["chosen"] for p in pairs])
    rejected = scorer.score(prompts, [p["rejected"] for p in pairs])
    margins = [c - r for c, r in zip(chosen, rejected)]
    return {"accuracy": sum(m > 0 for m in margins) / len(margins), "margin": sum(margins) / len(margins),
            "pairs": len(margins)}


def build_reward_trainer(cfg: RewardModelConfig, inputs, context, train_pairs: list[dict]):
    from datasets import Dataset
    from trl import RewardConfig as TrlRewardConfig
    from trl import RewardTrainer

    tokenizer = training.tokenizer_for(inputs["model"], cfg)
    model = training.load_trained_model(inputs["model"], cfg, context, "AutoModelForSequenceClassification", num_labels=1,
                               pad_token_id=tokenizer.pad_token_id, tokenizer=tokenizer)
    args = TrlRewardConfig(**training.trainer_arguments(cfg, context, max_length=cfg.max_length,
                                            center_rewards_coefficient=cfg.center_rewards_coefficient))
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_pairs),
                            processing_class=tokenizer, peft_config=training.peft_config(cfg, task_type="SEQ_CLS"))
    if len(trainer.train_dataset) == 0:
        raise DataError(f"{inputs['data']}: no preference pair fits aligner.max_length={cfg.max_length} tokens")
    return trainer


class RewardModelTrainer(Aligner):
    """Trains a scalar reward model on preference pairs (TRL RewardTrainer) and reports held-out accuracy."""

    config_class = RewardModelConfig
    check_data = training.check_preference_data

    def run(self, inputs, output_dir, context):
        from datasets import Dataset

        cfg = self.config
        pairs = Dataset.from_list(drop_identical_pairs(load_preferences(inputs["data"], cfg.format),
                                                       str(inputs["data"]))[0])
        train, held_out = training.split_heldout(pairs, cfg.eval_fraction, context.seed, inputs["data"])

        def report(model, tokenizer) -> dict[str, float]:  # pairwise accuracy with the scorer PPO uses
            if held_out is None:
                return {}
            scorer = RewardScorer(model, tokenizer, max_length=cfg.max_length, batch_size=cfg.batch_size)
            return {f"eval_{k}": v for k, v in pairwise_accuracy(scorer, held_out.to_list()).items()}

        training.train_resume_save(lambda: build_reward_trainer(cfg, inputs, context, train.to_list()), cfg, inputs,
                          output_dir, context, report=report)
        return output_dir
