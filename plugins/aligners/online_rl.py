"""What the online-RL aligners (PPO, GRPO, RLOO) share: their prompts, their rewards and their reference.

Why one module: the three sample answers to prompts and score them, so they should read the same data,
put the same system turn in front of it, fit it to the same length and score it with the same reward
functions — ``aligner=ppo`` and ``aligner=grpo`` take one config form and one data file. The pieces:

* **Parameters** (:class:`PromptsAndRewards`): ``rewards`` (reward functions as ``NAME`` or ``NAME:WEIGHT``),
  ``reward_params``, ``reward_model_weight``, ``system_prompt``, ``prompt_field``, ``format`` and
  ``max_prompt_length``; each aligner's params dataclass takes these fields and checks them with
  :func:`check_prompts_and_rewards`.
* **Prompt data with columns** (:func:`load_prompt_records`). Prompts come from any format lmforge reads
  (preference pairs give their shared prompt, so an online aligner swaps into the default pipeline
  unchanged) or from a named field (``prompt_field: question`` for GSM8K). Every other scalar field of a
  record (GSM8K's ``answer``) travels with its prompt and reaches each reward function as a keyword
  argument of that name. Records without a known format fall back to a ``question``/``query``/``problem``/
  ``instruction`` field.
* **System prompt and length** (:func:`online_prompts`). ``system_prompt`` (in the configs: the sampler's,
  so the policy is trained under the prompt it will be sampled with) goes in front of every prompt that has
  none; then long dialogues lose their oldest turns (then the start of the last turn) until they fit
  ``max_prompt_length`` tokens.
* **Rewards** (:func:`check_rewards`): each reward function is called once on the first record before
  training, so a missing column fails at once.
* **Reference** (:func:`reference_for_trl`): TRL's GRPO-family trainers take no reference model; the one
  they build is swapped for the one DPO and KTO get (``training.reference_model``).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import DataError
from lmforge.plugins.aligners.rewards import check_reward_spec, last_user_text
from lmforge.plugins.lib.data import is_text_only, read_records
from lmforge.plugins.lib.generation import with_system_prompt

PROMPT_FALLBACK_FIELDS = ("question", "query", "problem", "instruction")
RESERVED_COLUMNS = ("prompt", "completion", "completion_ids", "prompt_messages")


@dataclass
class PromptsAndRewards:
    """The prompt and reward keys every online-RL aligner takes."""

    rewards: list[str] = field(default_factory=list)  # reward functions, "name" or "name:weight"
    reward_params: dict[str, Any] = field(default_factory=dict)  # reward function -> {parameter: value}
    reward_model_weight: float = 1.0  # weight of the optional `reward_model` input
    system_prompt: str | None = None  # put in front of every prompt without one (configs: the sampler's)
    prompt_field: str = ""  # take prompts from this field (e.g. GSM8K's "question") instead of a format
    format: str = "auto"
    max_prompt_length: int = 256  # longer prompts lose their oldest turns, then the start of the last one


def check_prompts_and_rewards(params: PromptsAndRewards) -> None:
    """Called from the params' ``__post_init__``: a misspelt reward or a bad length fails before any stage runs."""
    from lmforge.params import at_least

    at_least(params, 1, "max_prompt_length")
    check_reward_spec(params.rewards, params.reward_params)


def load_prompt_records(path, fmt: str = "auto", prompt_field: str = "") -> list[dict[str, Any]]:
    """``{"prompt": messages, **scalar columns}`` per record of a prompt/preference/SFT/question file."""
    from lmforge.plugins.lib.formats import detect_format, load_prompts

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
        where = f"{path}: record {index + 1}"
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
    """Drop the oldest turns before the last, then cut the last turn's start, until the prompt fits; system
    turns stay (a plain-text prompt keeps its last ``max_tokens`` tokens)."""
    if isinstance(messages, str):
        ids = tokenizer(messages, add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids[-max_tokens:]) if len(ids) > max_tokens else messages

    def size(msgs):
        return len(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False))

    messages = list(messages)
    older = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
    while older and size(messages) > max_tokens:
        messages.pop(older[0])
        older = [i - 1 for i in older[1:]]
    excess = size(messages) - max_tokens
    if excess > 0:
        ids = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
        messages[-1] = {**messages[-1], "content": tokenizer.decode(ids[excess + 1:])}
    return messages


def online_prompts(path, params: PromptsAndRewards, tokenizer) -> list[dict[str, Any]]:
    """The prompt records of ``path``, each with the system prompt in front and fitted to ``max_prompt_length``."""
    rows = load_prompt_records(path, params.format, params.prompt_field)
    for row in rows:
        row["prompt"] = fit_prompt(with_system_prompt(row["prompt"], params.system_prompt), tokenizer,
                                   params.max_prompt_length)
    return rows


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


@contextmanager
def reference_for_trl(trainer_class, reference):
    """While ``trainer_class`` is built, the reference model it makes is ``reference``.

    TRL's GRPO and RLOO trainers take no reference argument: with ``beta > 0`` and no LoRA they reload the
    policy's ``config._name_or_path`` through ``create_model_from_path``. That reload misses what lmforge did
    to the policy after loading it — embeddings resized for the tokens a ``chat_template`` added — and fails
    at the first new token id. Here the reload returns the reference DPO and KTO get
    (``training.reference_model``: the input model fitted to the tokenizer, frozen, in the policy's dtype),
    and TRL prepares it as its own. ``reference`` None (LoRA, or ``beta`` 0) changes nothing.
    """
    module = sys.modules[trainer_class.__module__]
    if reference is None:
        yield
        return
    original = module.create_model_from_path
    handed_over = []

    def hand_over(model_id, **kwargs):
        handed_over.append(model_id)
        return reference

    module.create_model_from_path = hand_over
    try:
        yield
    finally:
        module.create_model_from_path = original
    if not handed_over:
        raise RuntimeError(f"{trainer_class.__name__} built no reference through create_model_from_path; "
                           "online_rl.reference_for_trl needs updating for this TRL version")
