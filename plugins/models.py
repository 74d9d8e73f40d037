"""Opening and saving models: one place that turns a model ref into a tokenizer and a causal LM.

Every stage and command that reads a model (finetuner, aligners, reward model, samplers, serve, chat, rank,
evaluators, pretrainer init) goes through here, so a local directory and a Hub id (``org/name[@revision]``,
read from the normal Hugging Face cache) work the same everywhere, with safetensors only and no remote code.
Heavy imports stay inside functions so that listing plugins never imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmforge.hub import ResolvedModel, resolve_model_ref


def model_path(ref: str | os.PathLike) -> Path:
    """The local directory of a model ref (a path, or a Hub id resolved through the HF cache)."""
    return resolve_model_ref(ref).path


def load_tokenizer(ref: str | os.PathLike):
    """The tokenizer of a model dir or Hub id, no remote code."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path(ref)), trust_remote_code=False)


def load_causal_lm(ref: str | os.PathLike, context=None, inference: bool = False):
    """A causal LM from a model dir or Hub id, safetensors only, no remote code.

    Weights to be trained stay fp32 (the trainer's bf16/fp16 flag runs the maths in reduced precision
    under autocast; small updates would round away in bf16 weights). ``inference=True`` loads in the
    hardware's reduced precision to halve memory.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.float32
    if context is not None and inference:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(context.hardware.dtype_name(), torch.float32)
    return AutoModelForCausalLM.from_pretrained(
        str(model_path(ref)), dtype=dtype, use_safetensors=True, trust_remote_code=False,
        attn_implementation=context.hardware.attn_implementation if context else "sdpa",
    )


def save_model_dir(model, tokenizer, output_dir: str | Path) -> None:
    """Write a plain HF model dir: model.safetensors, config.json, generation_config.json, tokenizer files."""
    model.save_pretrained(str(output_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(output_dir))


__all__ = ["ResolvedModel", "load_causal_lm", "load_tokenizer", "model_path", "resolve_model_ref", "save_model_dir"]
