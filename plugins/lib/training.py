"""The plumbing every trainer-based stage shares, written once as plain functions plus one params base.

Why: SFT, DPO, ORPO, KTO, GRPO/RLOO and the reward model all run the same sequence — seed, load the
tokenizer and model, build ``XConfig(**arguments)``, forward logs to lmforge's metrics, train resuming from
the newest checkpoint, evaluate before and after on a held-out split, fold LoRA adapters back in, save a
plain model dir. Written once here, each plugin file is its data preparation, its algorithm's arguments
and its trainer class (see docs/write-a-plugin.md, "an aligner in 25 lines"), and a knob added here
(epochs, gradient checkpointing, load dtype, LoRA/QLoRA) reaches every trainer at once.

No implementation inheritance: :class:`TrainerConfig` is a dataclass of fields that plugins' params extend;
the behaviour lives in the functions below, which a plugin calls or not. Heavy imports stay inside
functions so that listing plugins never imports torch.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.params import ParamError, at_least, one_of
from lmforge.plugins.lib.checkpoints import latest_checkpoint, step_of
from lmforge.plugins.lib.models import (
    end_of_turn_token,
    ensure_pad_token,
    load_tokenizer,
    model_path,
    prepare_model_for_tokenizer,
    save_model_dir,
    seed_everything,
)
from lmforge.plugins.lib.splits import normalised_prompt, prompt_of, split_heldout  # noqa: F401 (re-exported)

METHODS = ("full", "lora", "qlora")
DTYPES = ("auto", "bf16", "fp16", "fp32")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")
EVAL_NOISE = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_model_preparation_time",
              "eval_num_tokens", "epoch")


@dataclass
class TrainerConfig:
    """Knobs every trainer-based stage takes; a plugin's params dataclass extends it with its own.

    Each field checks itself when the params are built (``__post_init__``), so a typo or an impossible
    value fails with one line naming the key before any stage runs.
    """

    # how long: max_steps > 0, or epochs > 0 with max_steps: 0 (one way, never both)
    max_steps: int = 20
    epochs: float = 0.0
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: float = 0  # steps, or a fraction of the run when below 1 (0.1: the first 10 %)
    lr_scheduler: str = "linear"  # any of SCHEDULERS
    save_steps: int = 50  # 0: no checkpoints (no resume after a kill)
    logging_steps: int = 5
    eval_fraction: float = 0.0  # share of the data held out (seeded) and evaluated before and after training
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30 % slower
    dtype: str = "auto"  # weights as loaded: auto (fp32; the hardware's bf16/fp16 runs under autocast) | bf16 | fp16 | fp32
    # LoRA / QLoRA: adapters on a frozen base, merged into the weights on save (the output is a plain model dir)
    method: str = "full"  # full | lora | qlora (4-bit base: a CUDA GPU and bitsandbytes)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    save_adapter: bool = False  # also keep the unmerged adapter in <output>/adapter
    chat_template: str | None = None  # a preset (chatml, lmforge), a .jinja file, or a tokenizer dir / Hub id

    def __post_init__(self):
        check_trainer_params(self)


def check_trainer_params(p: TrainerConfig) -> None:
    """One-line errors naming the key (the stage's section is prefixed by ``build_params``)."""
    if p.max_steps < 0 or p.epochs < 0:
        key, value = ("max_steps", p.max_steps) if p.max_steps < 0 else ("epochs", p.epochs)
        raise ParamError(f"{key}: {value}; expected max_steps > 0, or epochs > 0 with max_steps: 0")
    if p.max_steps > 0 and p.epochs > 0:
        raise ParamError(f"epochs: {p.epochs} with max_steps: {p.max_steps}; train by one of them: set "
                          "max_steps=0 to run epochs, or epochs=0")
    if p.max_steps == 0 and p.epochs == 0:
        raise ParamError("max_steps: 0 with epochs: 0; expected max_steps > 0 or epochs > 0")
    at_least(p, 0, "batch_size", exclusive=True)
    at_least(p, 0, "grad_accum", exclusive=True)
    at_least(p, 0, "learning_rate", exclusive=True)
    if p.weight_decay < 0:
        raise ParamError(f"weight_decay: {p.weight_decay}; expected >= 0")
    if p.warmup_steps < 0 or (p.warmup_steps >= 1 and p.warmup_steps != int(p.warmup_steps)):
        raise ParamError(f"warmup_steps: {p.warmup_steps}; expected a step count, or a fraction in [0, 1)")
    one_of(p, "lr_scheduler", SCHEDULERS)
    if p.save_steps < 0:
        raise ParamError(f"save_steps: {p.save_steps}; expected >= 0 (0: no checkpoints)")
    at_least(p, 0, "logging_steps", exclusive=True)
    if not 0.0 <= p.eval_fraction < 1.0:
        raise ParamError(f"eval_fraction: {p.eval_fraction}; expected a fraction in [0, 1)")
    one_of(p, "dtype", DTYPES)
    one_of(p, "method", METHODS)
    if p.method != "full":
        at_least(p, 0, "lora_r", exclusive=True)
        at_least(p, 0, "lora_alpha", exclusive=True)
        if not 0.0 <= p.lora_dropout < 1.0:
            raise ParamError(f"lora_dropout: {p.lora_dropout}; expected a fraction in [0, 1)")
        if not p.lora_target_modules:
            raise ParamError("lora_target_modules: empty; name modules (q_proj …) or all-linear")
    if p.method == "qlora":
        check_qlora_available()


def check_qlora_available() -> None:
    """QLoRA needs bitsandbytes' 4-bit kernels, which need a CUDA GPU: say which is missing."""
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes)")
    if missing:
        raise ParamError(f"method: 'qlora' needs {' and '.join(missing)}; use method=lora (same adapters on a "
                          "full-precision base) or method=full here")


# --- arguments ----------------------------------------------------------------------------------------------

def hardware_arguments(hardware, static_shapes: bool = False) -> dict[str, Any]:
    """``TrainingArguments`` keys for where training runs (CPU/GPU, bf16/fp16 autocast, compile).

    ``torch_compile`` is only turned on for ``static_shapes`` stages (packed pretraining blocks): on
    variable-length SFT/preference batches it recompiles for every new shape and runs slower than eager.
    """
    precision = hardware.dtype_name()
    return {"use_cpu": not hardware.use_cuda(), "bf16": precision == "bf16", "fp16": precision == "fp16",
            "torch_compile": hardware.compile and static_shapes}


def base_arguments(context, *, max_steps: int, batch_size: int, learning_rate: float, save_steps: int,
                   logging_steps: int, static_shapes: bool = False) -> dict[str, Any]:
    """Arguments common to ``TrainingArguments`` and every TRL config: checkpoints in the stage's work dir."""
    return {
        "output_dir": str(context.checkpoint_dir()),
        "max_steps": max_steps,
        "per_device_train_batch_size": batch_size,
        "learning_rate": learning_rate,
        "logging_steps": logging_steps,
        "save_strategy": "steps" if save_steps > 0 else "no",
        "save_steps": max(save_steps, 1),
        "save_total_limit": 2,
        "report_to": "none",
        "seed": context.seed,
        "data_seed": context.seed,
        "disable_tqdm": True,  # progress and metrics reach the console through lmforge's log_metrics hook
        **hardware_arguments(context.hardware, static_shapes),
    }


def trainer_arguments(params: TrainerConfig, context, **algorithm) -> dict[str, Any]:
    """Keyword arguments for a TRL ``XConfig``: the shared knobs of ``params`` plus the algorithm's own."""
    arguments = base_arguments(context, max_steps=params.max_steps if params.max_steps > 0 else -1,
                               batch_size=params.batch_size, learning_rate=params.learning_rate,
                               save_steps=params.save_steps, logging_steps=params.logging_steps)
    arguments.update(
        num_train_epochs=params.epochs if params.epochs > 0 else 1.0,
        gradient_accumulation_steps=params.grad_accum, weight_decay=params.weight_decay,
        warmup_steps=params.warmup_steps, lr_scheduler_type=params.lr_scheduler,
        per_device_eval_batch_size=params.batch_size,
        activation_checkpointing=params.gradient_checkpointing,
    )
    if params.gradient_checkpointing:
        arguments["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    arguments.update(algorithm)
    return arguments


# --- models -------------------------------------------------------------------------------------------------

def torch_dtype(params: TrainerConfig):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(params.dtype, torch.float32)


def tokenizer_for(ref, params: TrainerConfig):
    """The model's tokenizer; with ``chat_template`` set, carrying that template (and its special tokens); with a
    pad token for batching (the EOS token when the model has none, as TRL does)."""
    tokenizer = load_tokenizer(ref, chat_template=params.chat_template)
    ensure_pad_token(tokenizer)
    return tokenizer


def load_trained_model(ref, params: TrainerConfig, context, auto_class: str = "AutoModelForCausalLM", *,
                       tokenizer=None, full_precision: bool = False, **kwargs):
    """The model to train, loaded in ``params.dtype`` (QLoRA: a 4-bit base); safetensors only, no remote code.

    With ``tokenizer`` the model is fitted to it (embeddings resized for tokens a chat template added, pad and
    EOS ids). ``full_precision`` loads fp32 whatever the params say (the base a QLoRA adapter is merged into)."""
    import torch
    import transformers

    qlora = params.method == "qlora" and not full_precision
    options = {"use_safetensors": True, "trust_remote_code": False,
               "dtype": torch.float32 if full_precision else torch_dtype(params),
               "attn_implementation": context.hardware.attn_implementation, **kwargs}
    if qlora:
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        options.update(dtype=compute, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute))
    model = getattr(transformers, auto_class).from_pretrained(str(model_path(ref)), **options)
    if tokenizer is not None:
        model = prepare_model_for_tokenizer(model, tokenizer)
    if qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=params.gradient_checkpointing)
    return model


def reference_model(ref, params: TrainerConfig, context, tokenizer=None):
    """The frozen reference of DPO/KTO-style trainers: None with LoRA (the trainer disables the adapter to get
    the starting weights back), else the input model loaded once more, frozen, in the policy's dtype."""
    if params.method != "full":
        return None
    return load_trained_model(ref, params, context, tokenizer=tokenizer).eval().requires_grad_(False)


def peft_config(params: TrainerConfig, task_type: str = "CAUSAL_LM"):
    """The LoRA config for ``method: lora|qlora`` (None for full training); a reward model's head trains fully."""
    if params.method == "full":
        return None
    from peft import LoraConfig

    targets = list(params.lora_target_modules)
    return LoraConfig(r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
                      bias="none", task_type=task_type,
                      target_modules="all-linear" if targets == ["all-linear"] else targets)


# --- data ---------------------------------------------------------------------------------

def reference_trainer(trainer_class, args, cfg: TrainerConfig, inputs: dict, context, tokenizer, dataset, heldout,
                      completion_columns: tuple[str, ...], **extra):
    """A TRL trainer that learns against a frozen reference (DPO, KTO and their kin): the policy in
    ``cfg.dtype``, the reference from :func:`reference_model` (none with LoRA), completions cut at the end of
    the turn."""
    trainer = trainer_class(model=load_trained_model(inputs["model"], cfg, context, tokenizer=tokenizer),
                            ref_model=reference_model(inputs["model"], cfg, context, tokenizer), args=args,
                            train_dataset=dataset, eval_dataset=heldout, processing_class=tokenizer,
                            peft_config=peft_config(cfg), **extra)
    end_completions_at_turn_end(trainer, completion_columns)
    return trainer


def end_completions_at_turn_end(trainer, columns: tuple[str, ...]) -> None:
    """Cut the tokenized completions of a trainer's datasets right after the chat template's end-of-turn token.

    TRL takes a completion as ``template(prompt + answer)`` minus ``template(prompt)``, which carries whatever the
    template writes after the turn (lmforge's ``<|end|>`` is followed by a newline): the model would be trained to
    emit one token past the end of its reply. Plain-text completions (no end-of-turn token) are left as they are.
    """
    tokenizer = trainer.processing_class
    end = end_of_turn_token(tokenizer)
    if end is None:
        return
    end_id = tokenizer.convert_tokens_to_ids(end)

    def cut(ids: list[int]) -> list[int]:
        return ids[: len(ids) - ids[::-1].index(end_id)] if end_id in ids else ids

    def fix(row):
        return {column: cut(row[column]) for column in columns if column in row}

    trainer.train_dataset = trainer.train_dataset.map(fix)
    if trainer.eval_dataset is not None:
        trainer.eval_dataset = trainer.eval_dataset.map(fix)


# --- running ------------------------------------------------------------------------------------------------

def metrics_callback(context):
    """A transformers ``TrainerCallback`` that sends every trainer log line to ``context.log_metrics``."""
    from transformers import TrainerCallback

    class LmforgeMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                numeric = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                context.log_metrics(numeric, step=state.global_step)

    return LmforgeMetrics()


def route_logs_to_lmforge(trainer, context) -> None:
    """Logs go to lmforge's metrics hook only: transformers' console printers (the dict lines of
    ``PrinterCallback`` / ``ProgressCallback``) are removed; the console display is built on the hook."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(metrics_callback(context))


def _eval_summary(metrics: dict[str, Any], suffix: str) -> dict[str, float]:
    return {f"{k}{suffix}": v for k, v in metrics.items()
            if k.startswith("eval_") and k not in EVAL_NOISE and isinstance(v, (int, float))}


def final_evaluation(trainer) -> dict[str, Any]:
    """The held-out metrics after training: those the trainer logged at its last step when it evaluated there
    (``eval_steps`` divides the steps), else a fresh ``evaluate()`` -- the held-out set is not evaluated twice."""
    last = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last is not None and last.get("step") == trainer.state.global_step:
        return last
    return trainer.evaluate()


@dataclass
class Trained:
    """What :func:`train_resume_save` did: the saved model and the summary metrics it logged."""

    model: Any
    summary: dict[str, float]
    resumed_from_step: int


def train_resume_save(build: Callable[[], Any], params: TrainerConfig, inputs: dict, output_dir, context,
                      report: Callable[[Any, Any], dict[str, float]] | None = None) -> Trained:
    """Seed, build the plugin's trainer, train (resuming from the newest checkpoint), evaluate, save.

    ``build()`` returns the configured trainer (its ``processing_class`` is the tokenizer that is saved).
    With an ``eval_dataset`` the held-out metrics are logged before (``eval_*_start``, on a fresh start)
    and after (``eval_*_end``) training. LoRA adapters are merged into the base weights on save and the
    merge is checked on a probe batch (``lora_merge_max_abs_diff``). ``report(model, tokenizer)`` adds
    the plugin's own end-of-run metrics (the reward model's pairwise accuracy).
    """
    seed_everything(context.seed)
    trainer = build()
    tokenizer = trainer.processing_class
    route_logs_to_lmforge(trainer, context)
    resume = latest_checkpoint(trainer.args.output_dir)
    summary: dict[str, float] = {}
    if trainer.eval_dataset is not None and resume is None:
        summary.update(_eval_summary(trainer.evaluate(), "_start"))
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    history = trainer.state.log_history
    if history and history[-1].get("train_loss") is not None:
        summary["train_loss"] = history[-1]["train_loss"]
    if trainer.eval_dataset is not None:
        summary.update(_eval_summary(final_evaluation(trainer), "_end"))
    model = trainer.model
    if params.method != "full":
        model, summary["lora_merge_max_abs_diff"] = merge_adapter(trainer, params, inputs["model"], output_dir,
                                                                  context)
    if report is not None:
        summary.update(report(model, tokenizer))
    context.log_metrics(summary, step=trainer.state.global_step)
    if trainer.is_world_process_zero():
        save_model_dir(model, tokenizer, output_dir)
    return Trained(model, summary, step_of(resume) if resume else 0)


def check_preference_data(stage, inputs: dict) -> None:
    """``check_data`` of the pairwise aligners (``check_data = training.check_preference_data``): a preference
    file the user named is read now, before the stages ahead of this one train -- a malformed record or a set of
    identical pairs fails with its one line here, not after pretraining and fine-tuning."""
    from lmforge.plugins.lib.data_checks import drop_identical_pairs
    from lmforge.plugins.lib.formats import load_preferences

    if "data" in inputs:
        drop_identical_pairs(load_preferences(inputs["data"], stage.config.format), str(inputs["data"]), where=stage.kind)


def run_trainer(build: Callable[[Any, dict, Any], Any]):
    """The ``run`` method of a stage whose whole work is the trainer ``build(cfg, inputs, context)`` returns::

        class DPOAligner(lmforge.Aligner):
            config_class = DPOConfig
            run = training.run_trainer(build_dpo)
    """
    def run(self, inputs, output_dir, context):
        train_resume_save(lambda: build(self.config, inputs, context), self.config, inputs, output_dir, context)
        return output_dir

    return run


def _probe_logits(model):
    """Outputs on a fixed probe batch (token ids 1..16 twice, the second half-padded), for the merge check."""
    import torch

    vocab = model.config.get_text_config().vocab_size
    ids = (torch.arange(1, 17) % vocab).repeat(2, 1)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()[0]


def merge_adapter(trainer, params: TrainerConfig, base_ref, output_dir, context):
    """Fold the LoRA weights into the base model (QLoRA: into a full-precision reload of the base);
    return the merged model and the largest output difference the merge made on a probe batch."""
    peft_model = trainer.model
    peft_model.eval()
    before = _probe_logits(peft_model)
    if params.save_adapter:
        peft_model.save_pretrained(str(Path(output_dir) / "adapter"), safe_serialization=True)
    if params.method == "qlora":
        from peft import PeftModel

        auto_class = "AutoModelForSequenceClassification" if "SequenceClassification" in type(
            peft_model.get_base_model()).__name__ else "AutoModelForCausalLM"
        with tempfile.TemporaryDirectory() as scratch:
            peft_model.save_pretrained(scratch, safe_serialization=True)
            base = load_trained_model(base_ref, params, context, auto_class, full_precision=True,
                                      tokenizer=trainer.processing_class)
            merged = PeftModel.from_pretrained(base, scratch).merge_and_unload()
    else:
        merged = peft_model.merge_and_unload()
    after = _probe_logits(merged)
    return merged, float((before - after.to(before.device)).abs().max())
