"""Group Relative Policy Optimisation with TRL's ``GRPOTrainer``, scored by lmforge reward functions.

Why GRPO: it needs no value model and no learned reward model — the policy samples a group of answers
per prompt, each is scored by reward functions (see ``rewards.py``: an exact GSM8K answer, a format,
a length target, a reward model dir, with weights), and an answer's advantage is its reward relative to
its group. This file also holds what GRPO and RLOO share (``rloo.py`` subclasses it):

* **Prompt data with columns.** Prompts come from any format lmforge reads (preference pairs give their
  shared prompt, so ``aligner=grpo`` swaps into the default pipeline unchanged) or from a named field
  (``prompt_field: question`` for GSM8K). Every other scalar field of a record (GSM8K's ``answer``)
  travels with its prompt and reaches each reward function as a keyword argument of that name.
  Records without a known format fall back to a ``question``/``query``/``problem``/``instruction`` field.
* **Prompt length.** TRL no longer truncates prompts; long dialogues lose their oldest turns (then the
  start of the last turn) so prompt plus completion fit ``max_prompt_length + max_completion_length``.
* **Reference model.** With ``beta > 0`` TRL builds the reference by reloading ``_name_or_path``; for a
  policy loaded from an lmforge model dir that is the input artifact itself (set to its absolute path
  here), i.e. exactly the frozen starting weights, however the model was first created.
* **Resume.** Checkpoints go to the stage's work dir; a re-run resumes from the newest one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge import Aligner
from lmforge.errors import ConfigError, DataError

from ..common import latest_checkpoint, metrics_callback, read_records, seed_everything, trainer_arguments
from ..data import is_text_only
from ..models import load_causal_lm, load_tokenizer, save_model_dir
from .rewards import for_trl, last_user_text, reward_components

PROMPT_FALLBACK_FIELDS = ("question", "query", "problem", "instruction")
RESERVED_COLUMNS = ("prompt", "completion", "completion_ids", "prompt_messages")


def load_prompt_records(path, fmt: str = "auto", prompt_field: str = "") -> list[dict[str, Any]]:
    """``{"prompt": messages, **scalar columns}`` per record of a prompt/preference/SFT/question file."""
    from ..formats import detect_format, load_prompts

    if is_text_only(path):
        return [{"prompt": prompt} for prompt in load_prompts(path)]
    records = read_records(path)
    adapter = None
    if not prompt_field:
        try:
            adapter = detect_format(records[0], f"{path}: record 0", fmt)
        except DataError:
            prompt_field = next((k for k in PROMPT_FALLBACK_FIELDS if isinstance(records[0].get(k), str)), "")
            if fmt != "auto" or not prompt_field:
                raise
    rows = []
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        if adapter is not None:
            prompt = adapter.prompt(record, where)
        else:
            text = record.get(prompt_field)
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: no non-empty string field '{prompt_field}' (the prompt_field)")
            prompt = [{"role": "user", "content": text}]
        columns = {k: v for k, v in record.items()
                   if k not in RESERVED_COLUMNS and k != prompt_field and isinstance(v, (str, int, float, bool))}
        rows.append({"prompt": prompt, **columns})
    return rows


def fit_prompt(messages: list[dict], tokenizer, max_tokens: int) -> list[dict]:
    """Drop the oldest non-system turns, then cut the last turn's start, until the prompt fits."""
    def size(msgs):
        return len(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False))

    messages = list(messages)
    while size(messages) > max_tokens and len(messages) > 1:
        drop = next((i for i, m in enumerate(messages[:-1]) if m["role"] != "system"), 0)
        messages.pop(drop)
    excess = size(messages) - max_tokens
    if excess > 0:
        ids = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
        messages[-1] = {**messages[-1], "content": tokenizer.decode(ids[excess + 1:])}
    return messages


@dataclass
class OnlineRLParams:
    max_steps: int = 20
    batch_size: int = 8  # completions per device step: a multiple of num_generations
    grad_accum: int = 1
    num_generations: int = 4  # completions sampled per prompt (the group)
    learning_rate: float = 1e-5
    beta: float = 0.04  # KL penalty to the input model; 0 drops the reference model
    rewards: list[str] = field(default_factory=list)  # reward functions, "name" or "name:weight"
    reward_params: dict[str, Any] = field(default_factory=dict)  # reward function -> {parameter: value}
    reward_model_weight: float = 1.0  # weight of the optional `reward_model` input
    max_prompt_length: int = 256
    max_completion_length: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_iterations: int = 1  # optimisation passes over each generated batch
    epsilon: float = 0.2  # clip range of the policy ratio
    prompt_field: str = ""  # take prompts from this field (e.g. GSM8K's "question") instead of a format
    format: str = "auto"
    save_steps: int = 50
    logging_steps: int = 5


@dataclass
class GRPOParams(OnlineRLParams):
    loss_type: str = "dapo"  # grpo | dapo | dr_grpo | bnpo | ... (TRL's GRPO loss types)
    scale_rewards: str = "group"  # group | batch | none


class GRPOAligner(Aligner):
    """GRPO: sample a group per prompt, score with reward functions, reinforce the better-than-group."""

    config_class = GRPOParams

    def trainer_classes(self):
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer

    def algorithm_arguments(self) -> dict[str, Any]:
        return {"loss_type": self.config.loss_type, "scale_rewards": self.config.scale_rewards}

    def run(self, inputs, output_dir, context):
        from datasets import Dataset

        cfg = self.config
        if cfg.num_generations < 2 or (cfg.batch_size * cfg.grad_accum) % cfg.num_generations:
            raise ConfigError(f"aligner.batch_size: batch_size x grad_accum ({cfg.batch_size} x {cfg.grad_accum}) "
                              f"must be a multiple of num_generations ({cfg.num_generations}, at least 2)")
        seed_everything(context.seed)
        tokenizer = load_tokenizer(inputs["model"])
        components = reward_components(list(cfg.rewards), dict(cfg.reward_params), inputs.get("reward_model"),
                                       cfg.reward_model_weight)
        rows = load_prompt_records(inputs["data"], cfg.format, cfg.prompt_field)
        for row in rows:
            row["prompt"] = fit_prompt(row["prompt"], tokenizer, cfg.max_prompt_length)
        check_rewards(components, rows[0])

        policy = load_causal_lm(inputs["model"], context)
        policy.config._name_or_path = str(Path(inputs["model"]).resolve())  # the reference TRL reloads
        config_class, trainer_class = self.trainer_classes()
        args = config_class(
            **trainer_arguments(context, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                                learning_rate=cfg.learning_rate, save_steps=cfg.save_steps,
                                logging_steps=cfg.logging_steps),
            gradient_accumulation_steps=cfg.grad_accum, num_generations=cfg.num_generations, beta=cfg.beta,
            max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_k=cfg.top_k,
            top_p=cfg.top_p, num_iterations=cfg.num_iterations, epsilon=cfg.epsilon,
            reward_weights=[weight for _, _, weight in components], activation_checkpointing=False,
            **self.algorithm_arguments(),
        )
        trainer = trainer_class(model=policy, reward_funcs=[for_trl(name, fn) for name, fn, _ in components],
                                args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                callbacks=[metrics_callback(context)])
        trainer.train(resume_from_checkpoint=latest_checkpoint(args.output_dir))
        save_model_dir(trainer.model, tokenizer, output_dir)
        return output_dir


def check_rewards(components, row: dict[str, Any]) -> None:
    """Call each reward function once on the first record, so a missing column fails before training."""
    columns = {k: [v] for k, v in row.items() if k != "prompt"}
    for name, function, _ in components:
        if name == "reward_model":
            continue
        scores = function(completions=[""], prompts=[last_user_text(row["prompt"])],
                          prompt_messages=[row["prompt"]], **columns)
        if len(scores) != 1:
            raise DataError(f"reward function '{name}' returned {len(scores)} scores for 1 completion")
