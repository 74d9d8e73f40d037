"""Reward functions: plugins of kind ``reward_function``, combinable with a reward model, with weights.

Why a registry of plain callables: online aligners (GRPO, RLOO, PPO) need a score for each sampled
completion, and the right score depends on the task — an exact answer check for maths, a format check,
a length target, a learned reward model. Each is one function registered by name, so a config says
``rewards: [gsm8k_answer, format:0.2]`` (name, or name:weight) and a third-party plugin adds its own with one
``registry.add("reward_function", "mine", my_fn)``.

The contract every reward function keeps::

    f(completions: list[str], prompts: list[str], **columns) -> list[float]

``completions`` are the sampled answers as text, ``prompts`` the text of the last user turn of each
prompt, and ``columns`` the other fields of the prompt records, one list entry per completion (GSM8K's
``answer``, say), plus ``prompt_messages`` (the whole prompt as chat messages). Functions take their
own parameters as keyword arguments with defaults (``length(target_chars=200)``); configs set them
through ``reward_params``. Return ``None`` for a completion a function does not apply to.

:func:`parse_rewards` is the one reading of the ``rewards`` key (a list of NAME or NAME:WEIGHT, for GRPO, RLOO
and PPO alike; a mapping is refused with the form expected). :func:`reward_components` resolves names,
parameters and an optional reward model into weighted
callables (GRPO/RLOO hand them to TRL one by one so each is logged); :class:`CombinedReward` sums them
into one callable of the same signature (PPO scores its rollouts with it; :func:`combine_rewards` builds one
from names). :func:`for_trl` adapts a reward function to
the keyword arguments TRL's trainers pass.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, DataError

RewardFn = Callable[..., list]

GSM8K_ANSWER = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")
TRL_INTERNAL_KWARGS = ("completion_ids", "trainer_state", "log_extra", "log_metric", "environments")


def normalise_number(text: str) -> str | None:
    """``'1,300'`` -> ``'1300'``, ``'7.50'`` -> ``'7.5'``; None for what is not a number."""
    text = text.replace(",", "").strip().rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


def final_answer(text: str) -> str | None:
    """The number a solution commits to: after its last ``####``, else its last number."""
    marked = GSM8K_ANSWER.findall(text)
    if marked:
        return normalise_number(marked[-1])
    numbers = NUMBER.findall(text)
    return normalise_number(numbers[-1]) if numbers else None


def _column(columns: dict, name: str, function: str) -> list:
    if name not in columns:
        available = ", ".join(k for k in columns if k != "prompt_messages") or "(none)"
        raise DataError(f"reward function '{function}' needs a '{name}' column in the prompt data; "
                        f"columns: {available}")
    return columns[name]


def gsm8k_answer(completions: list[str], prompts: list[str], answer_column: str = "answer",
                 **columns) -> list[float]:
    """1.0 where the completion's final number equals the reference's ``#### <n>``, else 0.0."""
    references = _column(columns, answer_column, "gsm8k_answer")
    rewards = []
    for completion, reference in zip(completions, references):
        expected = final_answer(str(reference))
        rewards.append(1.0 if expected is not None and final_answer(completion) == expected else 0.0)
    return rewards


def answer_format(completions: list[str], prompts: list[str], pattern: str = r"####\s*-?[\d,]*\.?\d+\s*$",
           **columns) -> list[float]:
    """1.0 where ``pattern`` is found (multiline search), else 0.0; default: ends with ``#### <n>``."""
    compiled = re.compile(pattern, re.MULTILINE)
    return [1.0 if compiled.search(completion.strip()) else 0.0 for completion in completions]


def length(completions: list[str], prompts: list[str], target_chars: int = 200, **columns) -> list[float]:
    """1.0 at exactly ``target_chars`` characters, falling linearly to 0.0 at 0 or twice the target."""
    return [max(0.0, 1.0 - abs(len(completion) - target_chars) / target_chars) for completion in completions]


def regex_coverage(completions: list[str], prompts: list[str], pattern: str = r"[0-9]",
                   **columns) -> list[float]:
    """The share of a completion's characters inside matches of ``pattern`` (0.0 for an empty one)."""
    compiled = re.compile(pattern)
    rewards = []
    for completion in completions:
        covered = sum(match.end() - match.start() for match in compiled.finditer(completion))
        rewards.append(covered / len(completion) if completion else 0.0)
    return rewards


class RewardModelScorer:
    """A reward model dir (sequence classification, one label) as a reward function.

    The prompt (``prompt_messages`` when given, else the prompt text as one user turn) and the completion
    are scored by :class:`~lmforge.plugins.aligners.reward_model.RewardScorer`, rendered with the reward
    model's own chat template, so a reward model and a policy may use different tokenizers.
    """

    __name__ = "reward_model"

    def __init__(self, model_dir: str | Path, batch_size: int = 16, max_length: int = 512, device: str | None = None):
        import torch
        from lmforge.plugins.aligners.reward_model import RewardScorer

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise ConfigError(f"reward_model: {path} is not a model directory (no config.json)")
        self.scorer = RewardScorer.from_dir(path, max_length=max_length, batch_size=batch_size)
        self.scorer.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def __call__(self, completions: list[str], prompts: list[str], prompt_messages=None, **columns) -> list[float]:
        messages = prompt_messages or [[{"role": "user", "content": p}] for p in prompts]
        return self.scorer.score([list(m) for m in messages], list(completions))


def parse_rewards(spec, where: str = "aligner") -> dict[str, float]:
    """The one reading of ``rewards``: ``["gsm8k_answer", "format:0.2"]`` (weight 1 when omitted) -> name: weight.

    A mapping (``{format: 0.2}``) is refused with the form expected, so every online aligner takes one form."""
    prefix = f"{where}.rewards" if where else "rewards"
    if spec is None:
        return {}
    if isinstance(spec, str) or hasattr(spec, "items") or not hasattr(spec, "__iter__"):
        got = "a mapping" if hasattr(spec, "items") else repr(spec)
        raise ConfigError(f"{prefix}: expected a list of reward functions as NAME or NAME:WEIGHT "
                          f"(e.g. [length, format:0.2]), got {got}")
    weights = {}
    for item in spec:
        name, _, weight = (part.strip() for part in str(item).partition(":"))
        try:
            weights[name] = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"{prefix}: '{item}': weight of '{name}' is '{weight}'; expected a number "
                              "(NAME or NAME:WEIGHT)") from None
    return weights


def check_reward_spec(rewards, reward_params: dict[str, Any] | None = None) -> None:
    """Reward names, weights and parameters checked when an aligner's params are built (``__post_init__``),
    so ``rewards=[brevty]`` or ``reward_params={length: {target_chars: abc}}`` fails before any stage runs.

    Messages start with the key (``rewards: …``); :func:`lmforge.build_params` prefixes the stage name.
    A parameter's value must have the type of the function's default for it (an int passes for a float).
    """
    from lmforge import registry
    from lmforge.errors import close_match

    weights = parse_rewards(rewards, where="")
    known = registry().names("reward_function")
    for name in weights:
        if name not in known:
            raise ConfigError(f"rewards: '{name}' is not a reward function{close_match(name, known)}; "
                              f"registered: {', '.join(known) or '(none)'}")
    for name, extra in dict(reward_params or {}).items():  # a registered function's, in use or not (a config's
        #                                                    defaults may set one that an override of rewards drops)
        if name not in known:
            raise ConfigError(f"reward_params: '{name}' is not one of the rewards ({', '.join(weights) or 'none'}) "
                              f"nor a reward function{close_match(name, known)}")
        if not isinstance(extra, dict):
            raise ConfigError(f"reward_params: {name}: expected {{parameter: value}}, got {extra!r}")
        signature = inspect.signature(registry().get("reward_function", name))
        accepted = {p.name: p for p in list(signature.parameters.values())[2:]
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        for key, value in extra.items():
            if key not in accepted:
                raise ConfigError(f"reward_params: {name}.{key}: unknown parameter of reward function '{name}'"
                                  f"{close_match(key, accepted)}; takes: {', '.join(accepted) or '(none)'}")
            default = accepted[key].default
            if default is inspect.Parameter.empty or default is None:
                continue
            expected = (int, float) if isinstance(default, float) else type(default)
            if isinstance(value, bool) and not isinstance(default, bool) or not isinstance(value, expected):
                raise ConfigError(f"reward_params: {name}.{key}: expected {type(default).__name__} "
                                  f"(like the default {default!r}), got {value!r}")


def reward_components(weights: list[str], params: dict[str, dict[str, Any]] | None = None,
                      reward_model: str | Path | None = None, reward_model_weight: float = 1.0,
                      where: str = "aligner") -> list[tuple[str, RewardFn, float]]:
    """``(name, callable, weight)`` for each named reward function, plus the reward model when given."""
    from lmforge import registry
    from lmforge.errors import PluginNotFound

    weights = parse_rewards(weights, where)
    params = dict(params or {})
    for name in params:
        if name not in weights and name not in registry().names("reward_function"):
            raise ConfigError(f"{where}.reward_params.{name}: '{name}' is not one of the rewards "
                              f"({', '.join(weights) or 'none'}) nor a reward function")
    components = []
    for name, weight in weights.items():
        try:
            function = registry().get("reward_function", name)
        except PluginNotFound as exc:
            raise ConfigError(f"{where}.rewards.{name}: {exc}") from None
        extra = dict(params.get(name) or {})
        accepted = [p.name for p in inspect.signature(function).parameters.values()
                    if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY]
        for key in extra:
            if key not in accepted[2:]:
                raise ConfigError(f"{where}.reward_params.{name}.{key}: unknown parameter of reward function "
                                  f"'{name}'; takes: {', '.join(accepted[2:]) or '(none)'}")
        if extra:
            function = functools.partial(function, **extra)
        components.append((name, function, float(weight)))
    if reward_model is not None:
        components.append(("reward_model", RewardModelScorer(reward_model), float(reward_model_weight)))
    if not components:
        raise ConfigError(f"{where}.rewards: no reward functions and no reward_model input; name at least one "
                          f"(registered: {', '.join(registry().names('reward_function'))})")
    return components


class CombinedReward:
    """The weighted sum of several reward functions; same signature as one. ``None`` counts as 0."""

    __name__ = "combined_reward"

    def __init__(self, components: list[tuple[str, RewardFn, float]]):
        self.components = components
        self.last_scores: dict[str, list[float]] = {}  # each component's scores from the latest call

    def __call__(self, completions: list[str], prompts: list[str], **columns) -> list[float]:
        total = [0.0] * len(completions)
        for name, function, weight in self.components:
            scores = function(completions=completions, prompts=prompts, **columns)
            if len(scores) != len(completions):
                raise DataError(f"reward function '{name}' returned {len(scores)} scores for "
                                f"{len(completions)} completions")
            self.last_scores[name] = [float("nan") if s is None else float(s) for s in scores]
            total = [t + weight * (s or 0.0) for t, s in zip(total, scores)]
        return total


def combine_rewards(weights: list[str], params: dict[str, dict[str, Any]] | None = None,
                    reward_model: str | Path | None = None, reward_model_weight: float = 1.0) -> CombinedReward:
    """One callable summing named reward functions (and a reward model dir) with their weights."""
    return CombinedReward(reward_components(weights, params, reward_model, reward_model_weight))


def message_text(value) -> str:
    """Text of a TRL completion or prompt: a string as is, a message list as its last message's content."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return str(value[-1].get("content", ""))
    return str(value)


def last_user_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"]
    return str((users or prompt)[-1].get("content", ""))


def for_trl(name: str, function: RewardFn) -> RewardFn:
    """Adapt a reward function to TRL's call (``prompts``/``completions`` possibly as chat messages)."""

    def reward(prompts, completions, **kwargs):
        columns = {k: v for k, v in kwargs.items() if k not in TRL_INTERNAL_KWARGS}
        if prompts and not isinstance(prompts[0], str):
            columns["prompt_messages"] = prompts
        return function(completions=[message_text(c) for c in completions],
                        prompts=[last_user_text(p) for p in prompts], **columns)

    reward.__name__ = name
    return reward
