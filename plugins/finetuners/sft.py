"""Supervised fine-tuning (SFT) with TRL's ``SFTTrainer``: loss on the reply only, full or LoRA/QLoRA.

Why TRL: its SFT trainer renders conversations with the tokenizer's chat template and uses the template's
``{% generation %}`` markers to keep the loss on the assistant's replies (plus the end-of-turn token, so
the model learns to stop); for prompt/completion data it keeps the loss on the completion. It also packs
sequences (best-fit decreasing, with per-sequence positions so packed examples never attend to each
other) and runs the eval split. lmforge adds on top:

* data in any supported format (``lmforge.plugins.formats``: messages, ShareGPT, alpaca,
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
from pathlib import Path
from typing import ClassVar

from lmforge import Finetuner
from lmforge.errors import ConfigError, DataError

from ..common import latest_checkpoint, metrics_callback, seed_everything, trainer_arguments
from ..models import load_causal_lm, load_tokenizer, model_path, prepare_model_for_tokenizer, save_model_dir
from ..formats import load_conversations, load_prompt_completions, read_format

METHODS = ("full", "lora", "qlora")
TRUNCATION = ("keep_start", "drop")
LOSS_ON = ("assistant", "all")
PROMPT_COMPLETION = ("chat", "text")
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class SFTParams:
    # data
    format: str = "auto"  # auto, or messages | sharegpt | alpaca | prompt_completion | dialogue
    columns: dict[str, str] = field(default_factory=dict)  # rename record keys first: {question: prompt}
    system_prompt: str | None = None  # added to conversations that have no system turn (none by default)
    chat_template: str | None = None  # a preset (chatml, lmforge), a .jinja file, or a tokenizer dir / Hub id
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
    # optimisation
    max_steps: int = 30
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "cosine"
    # evaluation and checkpoints
    eval_fraction: float = 0.0  # share of the data held out for eval loss (or give an eval_data input)
    eval_steps: int = 0  # 0: evaluate at each save (or only at start and end when save_steps is 0)
    save_steps: int = 50
    logging_steps: int = 10
    # method
    method: str = "full"  # full | lora | qlora
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    save_adapter: bool = False  # also keep the unmerged adapter in <output>/adapter


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        from lmforge.errors import close_match

        raise ConfigError(f"finetuner.{name}: '{value}' is not one of {', '.join(allowed)}"
                          f"{close_match(value, allowed)}")


def check_params(cfg: SFTParams) -> None:
    _choice("method", cfg.method, METHODS)
    _choice("truncation", cfg.truncation, TRUNCATION)
    _choice("loss_on", cfg.loss_on, LOSS_ON)
    _choice("prompt_completion", cfg.prompt_completion, PROMPT_COMPLETION)
    if cfg.max_length < 8:
        raise ConfigError(f"finetuner.max_length: {cfg.max_length} is too small; expected at least 8 tokens")
    if not 0.0 <= cfg.eval_fraction < 1.0:
        raise ConfigError(f"finetuner.eval_fraction: {cfg.eval_fraction} must be in [0, 1)")
    if cfg.method != "full" and not cfg.lora_target_modules:
        raise ConfigError("finetuner.lora_target_modules: empty; name modules (q_proj …) or all-linear")


def check_qlora_available() -> None:
    """QLoRA needs bitsandbytes' 4-bit kernels, which need a CUDA GPU: say which is missing."""
    import importlib.util

    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes)")
    if missing:
        raise ConfigError(f"finetuner.method: 'qlora' needs {' and '.join(missing)}; use method=lora (same "
                          "adapters on a full-precision base) or method=full here")


def load_examples(path, cfg: SFTParams) -> tuple[list[dict], str]:
    """Training rows for TRL (``messages`` or ``prompt``/``completion``) and the data format's name."""
    adapter, _ = read_format(path, cfg.format, cfg.columns or None)
    common = {"fmt": adapter.name, "system_prompt": cfg.system_prompt, "placeholders": cfg.placeholders,
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


def check_chat_template(tokenizer, model_dir, cfg: SFTParams, conversational: bool) -> None:
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


def build_peft_config(cfg: SFTParams):
    from peft import LoraConfig

    targets = cfg.lora_target_modules
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      task_type="CAUSAL_LM",
                      target_modules="all-linear" if list(targets) == ["all-linear"] else list(targets))


def load_model(model_dir, cfg: SFTParams, context):
    if cfg.method != "qlora":
        return load_causal_lm(model_dir, context)
    check_qlora_available()
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)
    model = AutoModelForCausalLM.from_pretrained(str(model_path(model_dir)), quantization_config=quant, dtype=compute,
                                                 use_safetensors=True, trust_remote_code=False)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def build_trainer(cfg: SFTParams, inputs: dict, context):
    """The configured ``SFTTrainer`` with its datasets prepared, plus a dict of data statistics."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    check_params(cfg)
    seed_everything(context.seed)
    if context.quiet:
        import datasets

        datasets.disable_progress_bars()
    tokenizer = load_tokenizer(inputs["model"], chat_template=cfg.chat_template)
    examples, data_format = load_examples(inputs["data"], cfg)
    stats = {"examples": len(examples), "dropped_too_long": 0}
    if cfg.max_examples > 0:
        examples = examples[: cfg.max_examples]
    conversational = not (examples and isinstance(examples[0].get("prompt"), str))
    check_chat_template(tokenizer, inputs["model"], cfg, conversational)
    evaluation = None
    if inputs.get("eval_data"):
        eval_examples, _ = load_examples(inputs["eval_data"], cfg)
        evaluation = eval_examples
    if cfg.truncation == "keep_start":
        examples, stats["cut_prompt_side"], stats["dropped_too_long"] = keep_last_reply(
            examples, tokenizer, cfg.max_length)
        if not examples:
            raise DataError(f"{inputs['data']}: no example's last reply fits finetuner.max_length={cfg.max_length} "
                            "tokens; raise max_length")
    if cfg.truncation == "drop":
        examples, stats["dropped_too_long"] = drop_too_long(examples, tokenizer, cfg.max_length,
                                                            str(inputs["data"]))
        if evaluation is not None:
            evaluation, _ = drop_too_long(evaluation, tokenizer, cfg.max_length, str(inputs["eval_data"]))
    dataset = Dataset.from_list(examples)
    if evaluation is not None:
        evaluation = Dataset.from_list(evaluation)
    elif cfg.eval_fraction > 0:
        if len(dataset) < 2:
            raise DataError(f"{inputs['data']}: {len(dataset)} example(s); too few to hold out an eval split")
        split = dataset.train_test_split(test_size=cfg.eval_fraction, seed=context.seed)
        dataset, evaluation = split["train"], split["test"]

    model = prepare_model_for_tokenizer(load_model(inputs["model"], cfg, context), tokenizer)
    peft_config = build_peft_config(cfg) if cfg.method in ("lora", "qlora") else None
    eval_steps = cfg.eval_steps or (cfg.save_steps if cfg.save_steps > 0 else cfg.max_steps)
    args = SFTConfig(
        **trainer_arguments(context, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                            learning_rate=cfg.learning_rate, save_steps=cfg.save_steps,
                            logging_steps=cfg.logging_steps),
        gradient_accumulation_steps=cfg.grad_accum, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler,
        max_length=cfg.max_length, truncation_mode="keep_start", packing=cfg.packing, packing_strategy="bfd",
        assistant_only_loss=cfg.loss_on == "assistant" and conversational,
        completion_only_loss=cfg.loss_on == "assistant" and "prompt" in dataset.column_names,
        activation_checkpointing=False, per_device_eval_batch_size=cfg.batch_size,
        eval_strategy="steps" if evaluation is not None else "no", eval_steps=eval_steps,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=evaluation,
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[metrics_callback(context)])
    stats.update(format=data_format, train_examples=len(dataset),
                 eval_examples=len(evaluation) if evaluation is not None else 0,
                 train_rows=len(trainer.train_dataset),
                 dropped_no_loss=0 if cfg.packing else len(dataset) - len(trainer.train_dataset))
    return trainer, tokenizer, stats


def _probe_logits(model, tokenizer, trainer):
    """Logits of the first few prepared training rows (one padded batch), for the merge check."""
    import torch

    rows = trainer.train_dataset.select(range(min(4, len(trainer.train_dataset))))["input_ids"]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    return logits.masked_fill(~mask.bool().to(device)[..., None], 0.0)


def merge_adapter(trainer, tokenizer, cfg: SFTParams, model_dir, output_dir: Path, context):
    """Fold the LoRA weights into the base model; QLoRA reloads the base in full precision to do so."""
    peft_model = trainer.model
    peft_model.eval()
    before = _probe_logits(peft_model, tokenizer, trainer)
    if cfg.save_adapter:
        peft_model.save_pretrained(str(output_dir / "adapter"), safe_serialization=True)
    if cfg.method == "qlora":
        import tempfile

        from peft import PeftModel

        with tempfile.TemporaryDirectory() as scratch:
            peft_model.save_pretrained(scratch, safe_serialization=True)
            base = prepare_model_for_tokenizer(load_causal_lm(model_dir, context), tokenizer)
            merged = PeftModel.from_pretrained(base, scratch).merge_and_unload()
    else:
        merged = peft_model.merge_and_unload()
    after = _probe_logits(merged, tokenizer, trainer)
    return merged, float((before - after.to(before.device)).abs().max())


class SFTFinetuner(Finetuner):
    """SFT with reply-only loss (TRL SFTTrainer): full fine-tuning, LoRA or QLoRA; resumes after a kill."""

    config_class = SFTParams

    def __init__(self, config=None, **params):
        super().__init__(config, **params)
        check_params(self.config)  # at construction, so a pipeline fails before its first stage runs
        if self.config.method == "qlora":
            check_qlora_available()

    optional_inputs: ClassVar[dict[str, str]] = {"eval_data": "held-out SFT data for eval loss (any format)"}

    def run(self, inputs, output_dir, context):
        cfg = self.config
        trainer, tokenizer, stats = build_trainer(cfg, inputs, context)
        context.log_metrics({k: v for k, v in stats.items() if k != "format"}, step=0)
        resume = latest_checkpoint(trainer.args.output_dir)
        if trainer.eval_dataset is not None and resume is None:
            context.log_metrics({"eval_loss_start": trainer.evaluate()["eval_loss"]}, step=0)
        trainer.train(resume_from_checkpoint=resume)
        history = trainer.state.log_history
        summary = {"train_loss": history[-1].get("train_loss")} if history else {}
        if trainer.eval_dataset is not None:
            summary["eval_loss_end"] = trainer.evaluate()["eval_loss"]
        model = trainer.model
        if cfg.method in ("lora", "qlora"):
            model, summary["lora_merge_max_abs_diff"] = merge_adapter(
                trainer, tokenizer, cfg, inputs["model"], Path(output_dir), context)
        summary = {k: v for k, v in summary.items() if v is not None}
        context.log_metrics(summary, step=trainer.state.global_step)
        save_model_dir(model, tokenizer, output_dir)
        return output_dir
