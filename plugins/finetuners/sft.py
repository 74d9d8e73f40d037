"""Supervised fine-tuning (SFT) with TRL's ``SFTTrainer``: loss on the reply only, full or LoRA/QLoRA.

Why TRL: its SFT trainer renders conversations with the tokenizer's chat template and uses the template's
``{% generation %}`` markers to keep the loss on the assistant's replies (plus the end-of-turn token, so
the model learns to stop); for prompt/completion data it keeps the loss on the completion. It also packs
sequences (best-fit decreasing, with per-sequence positions so packed examples never attend to each
other) and runs the eval split. lmforge adds on top:

* data in any supported format (``lmforge.plugins.lib.formats``: messages, ShareGPT, alpaca,
  prompt/completion, one-string dialogues), auto-detected, with a system prompt / identity and
  ``{{name}}``-style placeholders filled from config;
* a stated truncation policy (``truncation``) that never cuts a reply's end-of-turn token: ``keep_start`` drops
  a too-long conversation's earliest turns (then the start of its last prompt) until its last reply fits whole
  (``cut_prompt_side``) or drops the example (``dropped_too_long``); ``drop`` skips every example longer than
  ``max_length``. Both are counted;
* LoRA through peft with target modules from config, merged into the base weights on save so the output
  is a plain model dir (the merge is checked on a probe batch: ``lora_merge_max_abs_diff``); QLoRA
  (4-bit base) only with a CUDA GPU and bitsandbytes, otherwise a one-line error saying so;
* resume from the last checkpoint in ``context.checkpoint_dir()`` after a kill, ending where an
  uninterrupted run would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from lmforge import Finetuner
from lmforge.errors import ConfigError, DataError
from lmforge.params import ParamError, one_of
from lmforge.plugins.lib import training
from lmforge.plugins.lib.formats import load_conversations, load_prompt_completions, read_format

TRUNCATION = ("keep_start", "drop")
LOSS_ON = ("assistant", "all")
PROMPT_COMPLETION = ("chat", "text")
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class SFTConfig(training.TrainerConfig):
    """SFT's own knobs; the shared ones (steps/epochs, batch, LoRA, dtype, …) come from ``TrainerConfig``."""

    max_steps: int = 30
    learning_rate: float = 5e-4
    lr_scheduler: str = "cosine"
    logging_steps: int = 10
    # data
    format: str = "auto"  # auto, or messages | sharegpt | alpaca | prompt_completion | dialogue
    columns: dict[str, str] = field(default_factory=dict)  # rename record keys first: {question: prompt}
    system_prompt: str | None = None  # added to conversations that have no system turn (none by default)
    placeholders: dict[str, str] = field(default_factory=dict)  # fills {{name}} / {{author}} in the data
    skip_negative: bool = True  # drop records labelled "label": false (KTO-style bad examples)
    skip_invalid: bool = False  # skip malformed records (one warning) instead of stopping with an error
    max_examples: int = 0  # train on the first N examples only (0: all), for quick runs
    prompt_completion: str = "chat"  # chat: through the chat template | text: raw prompt + completion + eos
    text_separator: str = " "  # text mode: starts each completion (kept on the completion side so the
    #                            tokenized prompt stays a prefix of prompt + completion)
    # loss and sequence length
    loss_on: str = "assistant"  # assistant: replies (or completions) only | all: every token
    max_length: int = 256
    truncation: str = "keep_start"  # keep_start: cut earlier turns so the last reply fits whole | drop: skip longer ones
    packing: bool = False  # best-fit-decreasing packing into max_length rows, no cross-attention
    eval_steps: int = 0  # 0: evaluate at each save (or only at start and end when save_steps is 0)

    def __post_init__(self):
        super().__post_init__()
        one_of(self, "truncation", TRUNCATION)
        one_of(self, "loss_on", LOSS_ON)
        one_of(self, "prompt_completion", PROMPT_COMPLETION)
        if self.max_length < 8:
            raise ParamError(f"max_length: {self.max_length} is too small; expected at least 8 tokens")


def load_examples(path, cfg: SFTConfig) -> tuple[list[dict], str]:
    """Training rows for TRL (``messages`` or ``prompt``/``completion``) and the data format's name."""
    adapter, _ = read_format(path, cfg.format, cfg.columns or None)
    common = {"fmt": cfg.format, "system_prompt": cfg.system_prompt, "placeholders": cfg.placeholders,
              "columns": cfg.columns or None, "skip_negative": cfg.skip_negative,
              "skip_invalid": cfg.skip_invalid}
    if adapter.name == "prompt_completion":
        text = cfg.prompt_completion == "text"
        pairs = load_prompt_completions(path, text=text, **common)
        if text:
            pairs = [{"prompt": p["prompt"], "completion": cfg.text_separator + p["completion"]}
                     for p in pairs]
        return pairs, adapter.name
    return [{"messages": c} for c in load_conversations(path, **common)], adapter.name


def _token_length(example: dict, tokenizer) -> int:
    if "messages" in example:
        return len(tokenizer.apply_chat_template(example["messages"], tokenize=True, return_dict=False))
    if isinstance(example["prompt"], str):
        text = example["prompt"] + example["completion"]
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # + eos
    return len(tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=True,
                                             return_dict=False))


def drop_too_long(examples: list[dict], tokenizer, max_length: int, source: str) -> tuple[list[dict], int]:
    kept = [e for e in examples if _token_length(e, tokenizer) <= max_length]
    if not kept:
        raise DataError(f"{source}: every example is longer than finetuner.max_length={max_length} tokens; "
                        "raise max_length or use truncation=keep_start")
    return kept, len(examples) - len(kept)


def keep_last_reply(examples: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int, int]:
    """``keep_start`` without losing an end of turn: a too-long conversation loses its earliest turns (after
    any system turn), then the start of its last prompt, until its last reply fits whole; one whose reply alone
    is too long (or too-long prompt/completion data) is dropped. Returns ``(examples, cut, dropped)``; TRL's own
    cut would drop the reply's end-of-turn token.
    """
    kept, cut, dropped = [], 0, 0
    for example in examples:
        if _token_length(example, tokenizer) <= max_length:
            kept.append(example)
            continue
        messages, fitted = example.get("messages"), None
        system = 1 if messages and messages[0]["role"] == "system" else 0
        while messages is not None and fitted is None:
            users = [i for i in range(system + 1, len(messages) - 1) if messages[i]["role"] == "user"]
            if not users:
                break
            messages = messages[:system] + messages[users[0]:]  # the earliest exchange goes
            if _token_length({"messages": messages}, tokenizer) <= max_length:
                fitted = messages
        if fitted is None and messages is not None:
            fitted = _cut_last_prompt(messages, tokenizer, max_length)
        if fitted is None:
            dropped += 1
        else:
            kept.append({**example, "messages": fitted})
            cut += 1
    return kept, cut, dropped


def fitted(examples: list[dict], tokenizer, max_length: int, source) -> tuple[list[dict], int, int]:
    """``keep_last_reply``, with one line naming ``source`` when no example is left."""
    kept, cut, dropped = keep_last_reply(examples, tokenizer, max_length)
    if not kept:
        raise DataError(f"{source}: none of the {dropped} examples' last reply fits "
                        f"finetuner.max_length={max_length} tokens; raise max_length")
    return kept, cut, dropped


def _cut_last_prompt(messages: list[dict], tokenizer, max_length: int) -> list[dict] | None:
    """The conversation with its last user turn's text cut from the left so the whole fits, or None."""
    if len(messages) < 2 or messages[-2]["role"] != "user":
        return None
    ids = tokenizer(messages[-2]["content"], add_special_tokens=False)["input_ids"]
    for _ in range(3):  # re-tokenization after a cut can differ by a token or two
        over = _token_length({"messages": messages}, tokenizer) - max_length
        if over <= 0:
            return messages
        if over + 1 >= len(ids):
            return None
        ids = ids[over + 1:]
        messages = [*messages[:-2], {**messages[-2], "content": tokenizer.decode(ids)}, messages[-1]]
    return messages if _token_length({"messages": messages}, tokenizer) <= max_length else None


def check_chat_template(tokenizer, model_dir, cfg: SFTConfig, conversational: bool) -> None:
    if not conversational:
        return
    template = tokenizer.chat_template
    if not template:
        raise ConfigError(f"finetuner: the tokenizer of {model_dir} has no chat template, which conversations "
                          "need; set finetuner.chat_template (chatml, lmforge, a .jinja file or a tokenizer to "
                          "copy it from)")
    if cfg.loss_on == "assistant" and not GENERATION_MARKER.search(template):
        from trl.chat_template_utils import get_training_chat_template

        try:
            get_training_chat_template(tokenizer)
        except ValueError:  # TRL knows no training variant of this template
            raise ConfigError(f"finetuner.loss_on: the chat template in {model_dir} has no "
                              "{% generation %} markers, which assistant-only loss needs; add them or set "
                              "loss_on=all") from None


def build_trainer(cfg: SFTConfig, inputs: dict, context):
    """The configured ``SFTTrainer`` with its datasets prepared, its tokenizer, and a dict of data statistics."""
    from datasets import Dataset
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    tokenizer = training.tokenizer_for(inputs["model"], cfg)
    examples, data_format = load_examples(inputs["data"], cfg)
    stats = {"examples": len(examples), "dropped_too_long": 0}
    if cfg.max_examples > 0:
        examples = examples[: cfg.max_examples]
    conversational = not (examples and isinstance(examples[0].get("prompt"), str))
    check_chat_template(tokenizer, inputs["model"], cfg, conversational)
    evaluation = load_examples(inputs["eval_data"], cfg)[0] if inputs.get("eval_data") else None
    if cfg.truncation == "keep_start":
        examples, stats["cut_prompt_side"], stats["dropped_too_long"] = fitted(
            examples, tokenizer, cfg.max_length, inputs["data"])
        if evaluation is not None:  # held-out chats keep their ends of turn too
            evaluation, stats["eval_cut_prompt_side"], stats["eval_dropped_too_long"] = fitted(
                evaluation, tokenizer, cfg.max_length, inputs["eval_data"])
    if cfg.truncation == "drop":
        examples, stats["dropped_too_long"] = drop_too_long(examples, tokenizer, cfg.max_length,
                                                            str(inputs["data"]))
        if evaluation is not None:
            evaluation, _ = drop_too_long(evaluation, tokenizer, cfg.max_length, str(inputs["eval_data"]))
    dataset = Dataset.from_list(examples)
    if evaluation is not None:
        evaluation = Dataset.from_list(evaluation)
    else:
        dataset, evaluation = training.split_heldout(dataset, cfg.eval_fraction, context.seed, inputs["data"])
    # at each save, else at the last step; epochs without saves: none (train_resume_save adds start and end)
    eval_steps = cfg.eval_steps or cfg.save_steps or cfg.max_steps
    args = TrlSFTConfig(**training.trainer_arguments(
        cfg, context, max_length=cfg.max_length, truncation_mode="keep_start", packing=cfg.packing,
        packing_strategy="bfd", assistant_only_loss=cfg.loss_on == "assistant" and conversational,
        completion_only_loss=cfg.loss_on == "assistant" and "prompt" in dataset.column_names,
        eval_strategy="steps" if evaluation is not None and eval_steps else "no", eval_steps=eval_steps or None,
        dataset_num_proc=None))
    model = training.load_trained_model(inputs["model"], cfg, context, tokenizer=tokenizer)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=evaluation,
                         processing_class=tokenizer, peft_config=training.peft_config(cfg))
    stats.update(format=data_format, train_examples=len(dataset),
                 eval_examples=len(evaluation) if evaluation is not None else 0,
                 train_rows=len(trainer.train_dataset),
                 dropped_no_loss=0 if cfg.packing else len(dataset) - len(trainer.train_dataset))
    return trainer, tokenizer, stats


class SFTFinetuner(Finetuner):
    """SFT with reply-only loss (TRL SFTTrainer): full fine-tuning, LoRA or QLoRA; resumes after a kill."""

    config_class = SFTConfig
    optional_inputs: ClassVar[dict[str, str]] = {"eval_data": "held-out SFT data for eval loss (any format)"}

    def check_data(self, inputs):
        """The chats the user named are read now: a bad record fails before the stages ahead of this one train."""
        for key in ("data", "eval_data"):
            if key in inputs:
                load_examples(inputs[key], self.config)

    def run(self, inputs, output_dir, context):
        def build():
            trainer, _, stats = build_trainer(self.config, inputs, context)
            context.log_metrics({k: v for k, v in stats.items() if k != "format"}, step=0)
            return trainer

        training.train_resume_save(build, self.config, inputs, output_dir, context)
        return output_dir
