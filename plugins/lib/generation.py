"""Text generation, written once: the sampler, chat, serve, the evaluators, online RL and retrieval use it.

Why ``generate``: it implements every sampling control users expect (temperature, top-k, top-p, min-p,
repetition penalty, stop strings, several EOS ids) on any transformers causal LM, CPU or GPU, so lmforge
writes none of that itself. What lmforge adds around it:

- the chat template with a system prompt (plain text for a tokenizer without a template);
- prompts sorted by length into left-padded batches (less padding, same results: greedy decoding of a
  prompt does not depend on its batch), ``n`` samples per prompt, a seed of its own or the run's;
- end-of-turn tokens (``<|end|>``) as extra EOS ids, and stop strings cut exactly (the text before the
  first stop string, the stop string itself excluded, as OpenAI's ``stop`` does);
- best-of-N: every sample scored by a reward model, the ``n`` with the highest reward kept.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lmforge.errors import ConfigError
from lmforge.params import ParamError
from lmforge.plugins.lib.models import generation_eos_ids, pad_token_id
from tqdm import auto as tqdm_auto  # looked up when a bar opens: the run's console routes tqdm.auto.tqdm
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer


@dataclass
class GenerateConfig:
    max_new_tokens: int = 48
    do_sample: bool = True  # False: greedy decoding (deterministic)
    temperature: float = 0.8
    top_k: int = 50  # 0: off
    top_p: float = 0.95  # 1.0: off
    min_p: float | None = None
    repetition_penalty: float = 1.0
    n: int = 1  # samples kept per prompt
    best_of: int | None = None  # samples drawn per prompt before keeping the n best (needs reward_model)
    batch_size: int = 8  # prompts per generate call
    reward_batch_size: int = 16
    seed: int | None = None  # None: the run's seed
    system_prompt: str | None = None
    stop_strings: list[str] = field(default_factory=list)
    stop_tokens: list[str] = field(default_factory=lambda: ["<|end|>"])  # extra EOS tokens (end of turn)
    max_prompts: int | None = None
    format: str = "auto"
    # Look it up when unsure: {retriever: {name: bm25, collection: docs/}, threshold: 1.0, k: 3} (see
    # plugins/retrieval/when_unsure.py); every completion then records whether retrieval fired and why.
    retrieval: dict | None = None

    def __post_init__(self):
        check_generation_settings(self)


def check_generation_settings(cfg, where: str = "") -> None:
    """Reject settings ``generate`` would misread or silently ignore; one line naming the key, as ``where.key``
    (without ``where``, as ``key``: :func:`~lmforge.config.build_params` names the section, ``sampler.key``)."""
    prefix = f"{where}." if where else ""
    checks = [
        ("max_new_tokens", cfg.max_new_tokens >= 1, "at least 1"),
        ("temperature", not cfg.do_sample or cfg.temperature > 0, ("> 0 when do_sample is true "
                                                                   "(use do_sample: false for greedy)")),
        ("top_k", cfg.top_k >= 0, ">= 0 (0 turns it off)"),
        ("top_p", 0 < cfg.top_p <= 1, "in (0, 1]"),
        ("min_p", cfg.min_p is None or 0 <= cfg.min_p <= 1, "in [0, 1]"),
        ("repetition_penalty", cfg.repetition_penalty > 0, "> 0 (1.0 turns it off)"),
        ("n", cfg.n >= 1, "at least 1"),
    ]
    for key in ("batch_size", "reward_batch_size"):
        if hasattr(cfg, key):
            checks.append((key, getattr(cfg, key) >= 1, "at least 1"))
    if getattr(cfg, "best_of", None) is not None:
        checks.append(("best_of", cfg.best_of >= cfg.n, f">= n ({cfg.n})"))
    drawn = getattr(cfg, "best_of", None) or cfg.n
    checks.append(("do_sample", cfg.do_sample or drawn == 1,
                   "true when several samples per prompt are drawn (greedy would repeat one answer)"))
    for key, ok, expected in checks:
        if not ok:
            raise ParamError(f"{prefix}{key}: got {getattr(cfg, key)!r}, expected {expected}")
    for stop in cfg.stop_strings:
        if not isinstance(stop, str) or not stop:
            raise ParamError(f"{prefix}stop_strings: {stop!r} is not a non-empty string")


def eos_token_ids(tokenizer, stop_tokens) -> list[int]:
    """End-of-text, the chat template's end-of-turn token (``<|end|>``, ``<|im_end|>`` …), and every extra stop
    token the vocabulary has."""
    vocab = tokenizer.get_vocab()
    ids = generation_eos_ids(tokenizer)
    return ids + [vocab[token] for token in stop_tokens if token in vocab and vocab[token] not in ids]


def sampling_kwargs(cfg) -> dict[str, Any]:
    """The sampling knobs of ``model.generate`` from settings with ``do_sample``, ``temperature``, ``top_k``,
    ``top_p``, ``min_p`` and ``repetition_penalty`` (the knobs only when sampling)."""
    kwargs: dict[str, Any] = {"do_sample": cfg.do_sample, "repetition_penalty": cfg.repetition_penalty}
    if cfg.do_sample:
        kwargs.update(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, min_p=cfg.min_p)
    else:  # the model's generation_config may carry sampling defaults; greedy must not warn about them
        kwargs.update(temperature=None, top_k=None, top_p=None, min_p=None)
    return kwargs


def generate_kwargs(cfg, tokenizer) -> dict[str, Any]:
    """Keyword arguments for ``model.generate`` from generation settings (sampling knobs only when sampling)."""
    kwargs = {"max_new_tokens": cfg.max_new_tokens, "eos_token_id": eos_token_ids(tokenizer, cfg.stop_tokens),
              "pad_token_id": pad_token_id(tokenizer), **sampling_kwargs(cfg)}
    if cfg.stop_strings:
        kwargs.update(stop_strings=list(cfg.stop_strings), tokenizer=tokenizer)
    return kwargs


def with_system_prompt(messages: list[dict] | str, system_prompt: str | None) -> list[dict] | str:
    """``system_prompt`` as the first turn of a conversation that has no system turn (plain text as it is)."""
    if not system_prompt or isinstance(messages, str) or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The text the model continues: its chat template with the assistant turn opened.

    A tokenizer without a chat template (a base model) gets the message contents joined by blank lines.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return "\n\n".join(message["content"] for message in messages)


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    # A chat template writes its own special tokens (bos); a plain prompt gets the tokenizer's usual ones.
    templated = bool(getattr(tokenizer, "chat_template", None))
    return tokenizer(render_prompt(tokenizer, messages), add_special_tokens=not templated)["input_ids"]


def cut_at_stop(text: str, stop_strings) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    positions = [text.find(stop) for stop in stop_strings if stop and stop in text]
    if not positions:
        return text, False
    return text[:min(positions)], True


def left_padded(sequences: list[list[int]], pad_id: int, device):
    """``input_ids`` and ``attention_mask`` tensors for prompts of different lengths, padded on the left."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        if ids:
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
    return input_ids.to(device), attention_mask.to(device)


def within_positions(model, input_ids, attention_mask, max_new_tokens: int):
    """``(input_ids, attention_mask, max_new_tokens)`` that fit the model's position table: a model with learned
    positions (GPT-2's ``n_positions``) fails with an index error past it, and no model was trained there. A
    prompt longer than the table keeps its end; the new tokens stop at the table's end (at least one)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if not limit:
        return input_ids, attention_mask, max_new_tokens
    if input_ids.shape[1] > limit - 1:
        input_ids, attention_mask = input_ids[:, 1 - limit:], attention_mask[:, 1 - limit:]
    return input_ids, attention_mask, max(1, min(max_new_tokens, limit - input_ids.shape[1]))


def sample(model, tokenizer, prompts: list[list[dict]], cfg, progress: bool = False) -> list[dict[str, Any]]:
    """Generate ``samples_per_prompt`` completions for each prompt; rows in prompt order.

    Each row: ``index``, ``sample``, ``prompt``, ``completion``, ``finish_reason`` (``stop``/``length``),
    ``completion_tokens``.
    """
    per_prompt = cfg.best_of or cfg.n
    kwargs = generate_kwargs(cfg, tokenizer)
    # A row that stopped early (stop string) is filled with pad tokens up to the batch's longest row.
    end_ids = set(kwargs["eos_token_id"]) | {kwargs["pad_token_id"]}
    encoded = [encode_prompt(tokenizer, with_system_prompt(p, cfg.system_prompt)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    results: dict[int, list[dict]] = {}
    bar = tqdm_auto.tqdm(total=len(prompts), desc="sampling", unit="prompt", disable=not progress)
    for start in range(0, len(order), cfg.batch_size):
        batch = order[start:start + cfg.batch_size]
        input_ids, attention_mask = left_padded([encoded[i] for i in batch], kwargs["pad_token_id"], model.device)
        input_ids, attention_mask, new = within_positions(model, input_ids, attention_mask, kwargs["max_new_tokens"])
        with torch.no_grad():
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                    num_return_sequences=per_prompt, **{**kwargs, "max_new_tokens": new})
        new_tokens = output[:, input_ids.shape[1]:].tolist()
        for offset, tokens in enumerate(new_tokens):
            end = next((k for k, token in enumerate(tokens) if token in end_ids), None)
            kept = tokens if end is None else tokens[:end]
            text, stopped = cut_at_stop(tokenizer.decode(kept, skip_special_tokens=True), cfg.stop_strings)
            prompt_index = batch[offset // per_prompt]
            results.setdefault(prompt_index, []).append({
                "index": prompt_index, "sample": offset % per_prompt, "prompt": prompts[prompt_index],
                "completion": text, "finish_reason": "stop" if end is not None or stopped else "length",
                "completion_tokens": len(kept)})
        bar.update(len(batch))
    bar.close()
    return [row for index in range(len(prompts)) for row in results[index]]


class _Interrupted(StoppingCriteria):
    """Ends a generation when ``event`` is set (a stop string was seen, or the reader went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TextStream:
    """One prompt's answer as it is generated: iterating yields the new text, stop strings cut exactly.

    ``generate`` runs in a thread and transformers' ``TextIteratorStreamer`` hands out the decoded text as
    tokens arrive, so the text shown is exactly what ``generate`` produced. A stop string ends the answer
    before it (text that turns out to start one is not taken back from what was yielded, but ``text`` holds
    the answer without it); a reader that stops iterating stops the generation. ``text`` is the answer so
    far, ``failed`` whether ``generate`` raised (re-raised in the reader's thread at the end).
    """

    def __init__(self, model, tokenizer, ids: list[int], cfg):
        self.model, self.tokenizer, self.ids, self.cfg = model, tokenizer, ids, cfg
        self.text, self.failed = "", False

    def __iter__(self) -> Iterator[str]:
        interrupted = threading.Event()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kwargs = generate_kwargs(self.cfg, self.tokenizer)
        input_ids = torch.tensor([self.ids], device=self.model.device)
        failure: list[BaseException] = []

        def generate():
            try:
                with torch.no_grad():
                    self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                        streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([_Interrupted(interrupted)]),
                                        **kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the reader's thread below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        try:
            for piece in streamer:
                text, stopped = cut_at_stop(self.text + piece, self.cfg.stop_strings)
                if len(text) > len(self.text):
                    yield text[len(self.text):]
                self.text = text
                if stopped:
                    interrupted.set()
                    break
        finally:
            interrupted.set()
            worker.join()
            self.failed = bool(failure)
        if failure:
            raise failure[0]


def score_with_reward_model(reward_model_dir, conversations: list[list[dict]], batch_size: int = 16,
                            device=None) -> list[float]:
    """The scalar reward of each whole conversation (prompt + final assistant answer) under a reward model dir."""
    from lmforge.plugins.aligners.reward_model import RewardScorer

    scorer = RewardScorer.from_dir(reward_model_dir, batch_size=batch_size)
    if device is not None:
        scorer.model.to(device)
    return scorer.score([c[:-1] for c in conversations], [c[-1:] for c in conversations])


def rerank_best_of(rows: list[dict], reward_model_dir, keep: int, batch_size: int, device=None) -> list[dict]:
    """Score every row with the reward model; per prompt keep the ``keep`` best, best first (``rank`` 0)."""
    conversations = [[*row["prompt"], {"role": "assistant", "content": row["completion"]}] for row in rows]
    for row, score in zip(rows, score_with_reward_model(reward_model_dir, conversations, batch_size, device)):
        row["reward"] = score
    by_prompt: dict[int, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(row["index"], []).append(row)
    kept = []
    for index in sorted(by_prompt):
        ranked = sorted(by_prompt[index], key=lambda r: -r["reward"])[:keep]
        for rank, row in enumerate(ranked):
            kept.append({**row, "rank": rank})
    return kept


# the samplers' one optional input, the judge that best-of-N reranks by
REWARD_MODEL_INPUT: dict[str, str] = {
    "reward_model": "a reward model dir (sequence classification, 1 label) for best-of-N"}


def check_best_of_input(cfg, inputs) -> None:
    if cfg.best_of is not None and not inputs.get("reward_model"):
        raise ConfigError("sampler.best_of: needs a 'reward_model' input to rank the samples by")


def sampling_metrics(prompts: list, rows: list[dict], seconds: float) -> dict[str, float]:
    """What a sampler stage logs: prompts, completions, generated tokens and their rate."""
    tokens = sum(row["completion_tokens"] for row in rows)
    return {"prompts": len(prompts), "completions": len(rows), "generated_tokens": tokens,
            "tokens_per_second": tokens / max(seconds, 1e-9)}


def write_completions(rows: list[dict], output_dir) -> Path:
    path = Path(output_dir) / "completions.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


