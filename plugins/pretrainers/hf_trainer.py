"""Pretraining with the Hugging Face ``Trainer``: a causal LM from a config, trained on packed blocks.

Why the HF Trainer: checkpointing, exact resume (optimizer, scheduler, RNG, data position), mixed
precision and ``accelerate launch`` come with it. lmforge adds the model-from-config step, document
packing with an end-of-text token between documents, validation loss / perplexity / bits per byte, and a
stop with a clear message when the loss is not finite.

The architecture comes from the ``model`` config group (``model_type`` plus that type's config fields), so
``model=tiny`` on a laptop and a 124M preset on a GPU run the same code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from lmforge import LmforgeError, Pretrainer
from lmforge.errors import ConfigError, close_match

from ..common import (iter_texts, latest_checkpoint, load_tokenizer, metrics_callback, save_model_dir,
                      seed_everything, trainer_arguments)


@dataclass
class PretrainConfig:
    max_steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    block_size: int = 128
    learning_rate: float = 1e-3
    lr_scheduler: str = "cosine"  # any transformers scheduler name (cosine, linear, warmup_stable_decay …)
    warmup_steps: int = 20
    weight_decay: float = 0.1
    adam_beta2: float = 0.99
    grad_clip: float = 1.0
    eval_fraction: float = 0.05  # share of packed blocks held out for validation
    eval_steps: int = 100
    save_steps: int = 50
    logging_steps: int = 10
    text_field: str = "text"


def build_model_config(model_cfg: dict, tokenizer):
    """``{"model_type": "llama", "hidden_size": 64, …}`` -> a transformers config; unknown fields are errors."""
    from transformers import AutoConfig

    model_cfg = dict(model_cfg)
    model_type = model_cfg.pop("model_type", "llama")
    try:
        defaults = AutoConfig.for_model(model_type)
    except ValueError:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        raise ConfigError(f"model.model_type: unknown '{model_type}'{close_match(model_type, CONFIG_MAPPING.keys())}")
    known = set(defaults.to_dict()) | set(getattr(defaults, "attribute_map", {}))
    for key in model_cfg:
        if key not in known:
            raise ConfigError(f"model.{key}: not a field of {model_type} configs{close_match(key, known)}")
    return AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **model_cfg)


def pack_documents(texts_path, tokenizer, block_size: int, text_field: str):
    """Tokenize every document, join them with eos between documents, cut into ``block_size`` blocks."""
    eos = tokenizer.eos_token_id
    blocks, buffer = [], []
    n_bytes = n_tokens = 0
    for batch in iter_texts(texts_path, text_field):
        encoded = tokenizer(batch, add_special_tokens=False)["input_ids"]
        for text, ids in zip(batch, encoded):
            n_bytes += len(text.encode("utf-8"))
            n_tokens += len(ids) + 1
            buffer.extend(ids)
            buffer.append(eos)
            while len(buffer) >= block_size:
                blocks.append(buffer[:block_size])
                buffer = buffer[block_size:]
    return blocks, n_bytes / max(n_tokens, 1)


class HFTrainerPretrainer(Pretrainer):
    """Builds the model from ``model`` config, packs the text, trains with the HF Trainer, resumes."""

    config_class = PretrainConfig

    def run(self, inputs, output_dir, context):
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments
        from transformers import default_data_collator

        cfg = self.config
        seed_everything(context.seed)
        tokenizer = load_tokenizer(inputs["tokenizer"])
        model_config = build_model_config(context.model or {}, tokenizer)
        model = AutoModelForCausalLM.from_config(model_config, attn_implementation=context.hardware.attn_implementation)
        blocks, bytes_per_token = pack_documents(inputs["text"], tokenizer, cfg.block_size, cfg.text_field)
        n_eval = max(1, int(len(blocks) * cfg.eval_fraction)) if cfg.eval_fraction > 0 else 0
        if len(blocks) - n_eval < 1:
            raise LmforgeError(f"pretrainer: the text yields {len(blocks)} blocks of {cfg.block_size} tokens; "
                               "need more text or a smaller pretrainer.block_size")
        train = Dataset.from_dict({"input_ids": blocks[:len(blocks) - n_eval]})
        train = train.map(lambda b: {"labels": b["input_ids"]}, batched=True)
        evaluation = Dataset.from_dict({"input_ids": blocks[len(blocks) - n_eval:]}) if n_eval else None
        if evaluation is not None:
            evaluation = evaluation.map(lambda b: {"labels": b["input_ids"]}, batched=True)

        class StopOnNonFinite(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(loss):
                    raise LmforgeError(f"pretrainer: loss is {loss} at step {state.global_step}; last good "
                                       f"checkpoint: {latest_checkpoint(args.output_dir) or 'none'}")

        args = TrainingArguments(
            **trainer_arguments(context, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                                learning_rate=cfg.learning_rate, save_steps=cfg.save_steps,
                                logging_steps=cfg.logging_steps),
            gradient_accumulation_steps=cfg.grad_accum, lr_scheduler_type=cfg.lr_scheduler,
            warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, adam_beta2=cfg.adam_beta2,
            max_grad_norm=cfg.grad_clip, per_device_eval_batch_size=cfg.batch_size,
            eval_strategy="steps" if evaluation is not None else "no", eval_steps=cfg.eval_steps,
            include_num_input_tokens_seen=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                          data_collator=default_data_collator, processing_class=tokenizer,
                          callbacks=[metrics_callback(context), StopOnNonFinite()])
        trainer.train(resume_from_checkpoint=latest_checkpoint(args.output_dir))
        summary = {"train_blocks": len(train), "eval_blocks": n_eval, "bytes_per_token": bytes_per_token}
        if evaluation is not None:
            eval_loss = trainer.evaluate()["eval_loss"]
            summary.update(eval_loss=eval_loss, perplexity=math.exp(min(eval_loss, 50)),
                           bits_per_byte=eval_loss / math.log(2) / bytes_per_token)
        context.log_metrics(summary, step=trainer.state.global_step)
        save_model_dir(trainer.model, tokenizer, output_dir)
        (Path(output_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2))
        return output_dir
