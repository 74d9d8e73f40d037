"""Pretraining with the Hugging Face ``Trainer``: a causal LM from a config, trained on token windows.

Why the HF Trainer: checkpointing, exact resume (optimizer, scheduler, RNG, data position), mixed
precision and ``accelerate launch`` come with it. lmforge adds the model-from-config step (or the depth
dial), the cached token stream with eos between documents, sliding windows with a stride, nanoGPT's
contiguous train/validation split, validation loss / perplexity / bits per byte, tokens/s and MFU in the
logs, and a stop with a clear message when the loss is not finite.

The data, split and schedule options are the same as the lean loop's (``pretrainer=lean``, see
``config.py``, ``corpus.py`` and ``windows.py``), so the two are interchangeable; this one is the default because it carries the most
features (every ``TrainingArguments`` integration), the lean one is faster on small models.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lmforge import Pretrainer
from lmforge.plugins.lib.checkpoints import latest_checkpoint, step_of, stop_if_not_finite
from lmforge.plugins.lib.models import save_model_dir, seed_everything
from lmforge.plugins.lib.training import base_arguments, final_evaluation, route_logs_to_lmforge
from lmforge.plugins.pretrainers.config import PretrainConfig
from lmforge.plugins.pretrainers.corpus import load_corpus, training_summary
from lmforge.plugins.pretrainers.model import (
    build_model_config,
    check_model_config,
    flops_per_token,
    initial_model,
    peak_flops,
)
from lmforge.plugins.pretrainers.shard_input import check_shard_input
from lmforge.plugins.pretrainers.windows import Windows

__all__ = ["HFTrainerPretrainer", "PretrainConfig", "build_model_config"]


def scheduler_arguments(cfg: PretrainConfig) -> dict:
    """lmforge's schedule names -> ``TrainingArguments`` (cosine to min_lr, warmup-stable-decay, …)."""
    if cfg.lr_scheduler == "cosine":
        return {"lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr": cfg.min_lr}}
    if cfg.lr_scheduler == "wsd":
        decay = cfg.decay_steps if cfg.decay_steps is not None else max(1, int(0.2 * cfg.max_steps))
        return {"lr_scheduler_type": "warmup_stable_decay",
                "lr_scheduler_kwargs": {"num_decay_steps": decay, "decay_type": "linear",
                                        "min_lr_ratio": cfg.min_lr / cfg.learning_rate}}
    if cfg.lr_scheduler == "linear":
        return {"lr_scheduler_type": "linear"}
    return {"lr_scheduler_type": "constant_with_warmup"}


class WindowDataset:
    """A map-style dataset over token windows: ``input_ids`` and next-token ``labels`` (already shifted)."""

    def __init__(self, windows: Windows, limit: int | None = None):
        self.windows = windows
        self.length = len(windows) if limit is None else min(limit, len(windows))

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.__getitems__([index])[0]

    def __getitems__(self, indices):
        """A whole batch in one read (torch's DataLoader asks for it this way when a dataset has it)."""
        return [{"input_ids": row[:-1], "labels": row[1:]} for row in self.windows.batch(indices)]


def collate_windows(rows):
    """Stack rows; ``shift_labels`` tells transformers' loss that labels are already next-token targets."""
    import torch

    input_ids = torch.stack([r["input_ids"] for r in rows])
    labels = torch.stack([r["labels"] for r in rows])
    return {"input_ids": input_ids, "labels": labels, "shift_labels": labels}


def throughput_and_finite_loss(cfg: PretrainConfig, flops_token: float, peak: float | None):
    """A ``TrainerCallback`` adding tokens/s (and MFU) to each log line and stopping on a non-finite loss with
    the last good checkpoint named."""
    from transformers import TrainerCallback

    class ThroughputAndFiniteLoss(TrainerCallback):
        def __init__(self):
            self.last_time, self.last_step = None, 0

        def on_step_begin(self, args, state, control, **kwargs):
            if self.last_time is None:
                self.last_time, self.last_step = time.perf_counter(), state.global_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs if logs is not None else {}
            loss = logs.get("loss")
            if loss is None:
                return
            stop_if_not_finite(loss, state.global_step, args.output_dir)
            if self.last_time is not None and state.global_step > self.last_step:
                elapsed = time.perf_counter() - self.last_time
                tokens = ((state.global_step - self.last_step) * cfg.batch_size * cfg.grad_accum
                          * args.world_size * cfg.block_size)
                logs["tokens_per_s"] = tokens / max(elapsed, 1e-9)
                if peak:
                    logs["mfu"] = flops_token * logs["tokens_per_s"] / args.world_size / peak
                self.last_time, self.last_step = time.perf_counter(), state.global_step

    return ThroughputAndFiniteLoss()


def pretraining_trainer(**kwargs):
    """The HF ``Trainer`` with its per-step FLOP count made cheap: ``Trainer.floating_point_ops`` asks the model
    for its non-embedding parameter count at every step, walking every module (~2% of a small model's step on a
    CPU); the count does not change while pretraining, so it is taken once."""
    from transformers import Trainer

    class PretrainingTrainer(Trainer):
        parameters_without_embeddings: int | None = None

        def floating_point_ops(self, inputs) -> int:
            if self.parameters_without_embeddings is None:
                self.parameters_without_embeddings = self.model.num_parameters(exclude_embeddings=True)
            return 6 * inputs["input_ids"].numel() * self.parameters_without_embeddings

    return PretrainingTrainer(**kwargs)


def training_arguments(cfg: PretrainConfig, context, evaluate: bool):
    """``TrainingArguments`` with lmforge's schedule names, AdamW betas, clipping and compile setting."""
    from transformers import TrainingArguments

    common = base_arguments(context, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                            learning_rate=cfg.learning_rate, save_steps=cfg.save_steps,
                            logging_steps=cfg.logging_steps)
    common["torch_compile"] = context.hardware.compile if cfg.compile is None else cfg.compile
    return TrainingArguments(
        **common, **scheduler_arguments(cfg),
        gradient_accumulation_steps=cfg.grad_accum, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_eps, max_grad_norm=cfg.grad_clip if cfg.grad_clip > 0 else 0.0,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        eval_strategy="steps" if evaluate and cfg.eval_steps > 0 else "no",
        eval_steps=max(cfg.eval_steps, 1), remove_unused_columns=False,
    )


class HFTrainerPretrainer(Pretrainer):
    """Builds the model from ``model`` config, windows the cached tokens, trains with the HF Trainer, resumes."""

    config_class = PretrainConfig
    check_data = check_shard_input  # a directory of token shards is checked before any stage runs

    def preflight(self, context):
        check_model_config(context.model)
        self.config.check_machine()

    def run(self, inputs, output_dir, context):
        cfg = self.config
        tokenizer, corpus = load_corpus(cfg, inputs, context, context.is_main_process)
        seed_everything(context.seed)
        model = initial_model(cfg, tokenizer, context)
        eval_size = cfg.eval_batch_size or cfg.batch_size
        evaluation = WindowDataset(corpus.val, cfg.eval_batches * eval_size if cfg.eval_batches else None) \
            if len(corpus.val) else None
        args = training_arguments(cfg, context, evaluation is not None)
        callback = throughput_and_finite_loss(cfg, flops_per_token(model, cfg.block_size),
                                              peak_flops(cfg.peak_tflops, context.hardware.use_cuda()))
        trainer = pretraining_trainer(model=model, args=args, train_dataset=WindowDataset(corpus.train),
                                      eval_dataset=evaluation, data_collator=collate_windows,
                                      processing_class=tokenizer, callbacks=[callback])
        route_logs_to_lmforge(trainer, context)
        resume_from = latest_checkpoint(args.output_dir)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        val_loss = final_evaluation(trainer)["eval_loss"] if evaluation is not None else None
        summary = training_summary(corpus, len(evaluation or []), val_loss, steps=trainer.state.global_step,
                                   resumed_from_step=step_of(resume_from) if resume_from else 0,
                                   world_size=args.world_size)
        context.log_metrics(summary, step=trainer.state.global_step)
        if trainer.is_world_process_zero():
            save_model_dir(trainer.model, tokenizer, output_dir)
            (Path(output_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2))
        return output_dir
