"""Group Relative Policy Optimisation with TRL's ``GRPOTrainer``, scored by lmforge reward functions.

Why GRPO: it needs no value model and no learned reward model — the policy samples a group of answers
per prompt, each is scored by reward functions (see ``rewards.py``: an exact GSM8K answer, a format,
a length target, a reward model dir, with weights), and an answer's advantage is its reward relative to
its group. This file also holds what GRPO and RLOO share (``build_online_rl``, used by ``rloo.py``):

* **Prompt data with columns.** Prompts come from any format lmforge reads (preference pairs give their
  shared prompt, so ``aligner=grpo`` swaps into the default pipeline unchanged) or from a named field
  (``prompt_field: question`` for GSM8K). Every other scalar field of a record (GSM8K's ``answer``)
  travels with its prompt and reaches each reward function as a keyword argument of that name.
  Records without a known format fall back to a ``question``/``query``/``problem``/``instruction`` field.
* **Prompt length.** TRL no longer truncates prompts; long dialogues lose their oldest turns (then the
  start of the last turn) so prompt plus completion fit ``max_prompt_length + max_completion_length``.
* **Reference model.** With ``beta > 0`` TRL builds the reference by reloading ``_name_or_path``, set here
  to the input model's directory: exactly the frozen starting weights. With LoRA it is the adapter-disabled
  base.
* **Resume.** Checkpoints go to the stage's work dir; a re-run resumes from the newest one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from lmforge import Aligner
from lmforge.config import ParamError
from lmforge.errors import DataError

from .. import training
from ..common import read_records
from ..data import is_text_only
from ..models import model_path
from .rewards import check_reward_spec, for_trl, last_user_text, reward_components

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


def fit_prompt(messages: list[dict] | str, tokenizer, max_tokens: int) -> list[dict] | str:
    """Drop the oldest non-system turns, then cut the last turn's start, until the prompt fits (a plain-text
    prompt keeps its last ``max_tokens`` tokens)."""
    if isinstance(messages, str):
        ids = tokenizer(messages, add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids[-max_tokens:]) if len(ids) > max_tokens else messages

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
class OnlineRLParams(training.TrainerParams):
    batch_size: int = 8  # completions per device step: a multiple of num_generations
    learning_rate: float = 1e-5
    num_generations: int = 4  # completions sampled per prompt (the group)
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

    def __post_init__(self):
        super().__post_init__()
        check_reward_spec(self.rewards, self.reward_params)  # a misspelt reward fails before any stage runs
        if self.num_generations < 2 or (self.batch_size * self.grad_accum) % self.num_generations:
            raise ParamError(f"batch_size: batch_size x grad_accum ({self.batch_size} x {self.grad_accum}) must "
                              f"be a multiple of num_generations ({self.num_generations}, at least 2)")


@dataclass
class GRPOParams(OnlineRLParams):
    loss_type: str = "dapo"  # grpo | dapo | dr_grpo | bnpo | ... (TRL's GRPO loss types)
    scale_rewards: str = "group"  # group | batch | none


def build_online_rl(cfg: OnlineRLParams, inputs, context, trainer: str, **algorithm):
    """A GRPO-family trainer (``trainer``: TRL's ``GRPO``, ``RLOO`` …): prompts with their columns, reward
    functions, the shared and sampling knobs."""
    import trl
    from datasets import Dataset

    config_class, trainer_class = getattr(trl, f"{trainer}Config"), getattr(trl, f"{trainer}Trainer")

    tokenizer = training.tokenizer_for(inputs["model"], cfg)
    components = reward_components(list(cfg.rewards), dict(cfg.reward_params), inputs.get("reward_model"),
                                   cfg.reward_model_weight)
    rows = load_prompt_records(inputs["data"], cfg.format, cfg.prompt_field)
    for row in rows:
        row["prompt"] = fit_prompt(row["prompt"], tokenizer, cfg.max_prompt_length)
    check_rewards(components, rows[0])
    dataset, heldout = training.split_heldout(Dataset.from_list(rows), cfg.eval_fraction, context.seed, inputs["data"])
    policy = training.load_trained_model(inputs["model"], cfg, context, tokenizer=tokenizer)
    # The reference TRL builds (beta > 0, no LoRA) reloads `_name_or_path` in the policy's dtype: pointed at
    # the input model, that is the frozen starting weights, as `training.reference_model` gives DPO and KTO.
    policy.config._name_or_path = str(model_path(inputs["model"]).resolve())
    args = config_class(**training.trainer_arguments(
        cfg, context, num_generations=cfg.num_generations, beta=cfg.beta,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_k=cfg.top_k,
        top_p=cfg.top_p, num_iterations=cfg.num_iterations, epsilon=cfg.epsilon,
        reward_weights=[weight for _, _, weight in components], **algorithm))
    return trainer_class(model=policy, reward_funcs=[for_trl(name, fn) for name, fn, _ in components], args=args,
                         train_dataset=dataset, eval_dataset=heldout, processing_class=tokenizer,
                         peft_config=training.peft_config(cfg))


class GRPOAligner(Aligner):
    """GRPO: sample a group per prompt, score with reward functions, reinforce the better-than-group."""

    config_class = GRPOParams
    optional_inputs: ClassVar[dict[str, str]] = {"reward_model": "a reward model (sequence classification, 1 label)"}

    run = training.run_trainer(lambda cfg, inputs, context: build_online_rl(
        cfg, inputs, context, "GRPO", loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards))


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
