"""The model a pretrainer trains, and what it costs.

- **Continued pretraining**: ``init_from`` (a model dir or Hub id) starts from that model's weights and
  tokenizer instead of random weights from ``model`` config.
- **Model from config**: ``model_type`` plus that type's config fields (unknown field = error), or the
  ``depth`` dial, which derives width, heads and MLP size from the number of layers (as nanochat does:
  width = depth x aspect_ratio, heads of ``head_dim``).
- **Loss inside the model**: :func:`with_loss` makes the model and its loss one module to compile.
- **FLOPs** per token and the device's peak, for MFU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from lmforge.errors import ConfigError, close_match, one_line
from lmforge.plugins.lib.models import load_causal_lm, prepare_model_for_tokenizer
from lmforge.plugins.pretrainers.config import PretrainConfig
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

DEPTH_KEYS = ("depth", "aspect_ratio", "head_dim")
# bf16 dense peak FLOP/s of common accelerators, for MFU (override with pretrainer.peak_tflops).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
               "4090": 165.0, "3090": 71.0, "V100": 125.0}


def build_model_config(model_cfg: dict, tokenizer):
    """``{"model_type": "llama", "hidden_size": 64, …}`` -> a transformers config; unknown fields are errors.

    ``depth`` (with optional ``aspect_ratio``, default 64, and ``head_dim``, default 128) derives
    ``num_hidden_layers``, ``hidden_size``, heads and MLP width, so one number scales the model.
    """
    model_cfg = dict(model_cfg)
    model_type = model_cfg.pop("model_type", "llama")
    try:
        defaults = AutoConfig.for_model(model_type)
    except ValueError:
        raise ConfigError(f"model.model_type: unknown '{model_type}'{close_match(model_type, CONFIG_MAPPING.keys())}")
    if "depth" in model_cfg:
        model_cfg = {**derive_from_depth(model_type, defaults, model_cfg.pop("depth"),
                                         model_cfg.pop("aspect_ratio", 64), model_cfg.pop("head_dim", 128)),
                     **model_cfg}
    known = set(defaults.to_dict()) | set(getattr(defaults, "attribute_map", {}))
    for key in model_cfg:
        if key not in known:
            hint = " (aspect_ratio / head_dim go with depth)" if key in DEPTH_KEYS else ""
            raise ConfigError(f"model.{key}: not a field of {model_type} configs{close_match(key, known)}{hint}")
    try:
        return AutoConfig.for_model(
            model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **model_cfg)
    except Exception as exc:  # noqa: BLE001 - transformers validates the architecture (heads divide width…)
        cause = exc.__cause__ or exc
        raise ConfigError(f"model: {model_type} config rejected: {one_line(str(cause))}") from None


class _AnyVocab:
    """Stands in for the tokenizer (not trained yet) when the model preset is checked before the run."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self):
        return 256


def check_model_config(model_cfg: dict | None) -> None:
    """The model preset as the pretrainer will build it, checked before any stage runs (Stage.preflight)."""
    build_model_config(model_cfg or {}, _AnyVocab())


def derive_from_depth(model_type: str, defaults, depth: int, aspect_ratio: int, head_dim: int) -> dict:
    """nanochat's dial: width = depth x aspect_ratio rounded up to whole heads; MLP 4x (8/3 x for gated)."""
    if depth < 1 or aspect_ratio < 1 or head_dim < 1:
        raise ConfigError(f"model.depth / aspect_ratio / head_dim: must be >= 1, got {depth}/{aspect_ratio}/{head_dim}")
    heads = max(1, math.ceil(depth * aspect_ratio / head_dim))
    width = heads * head_dim
    names = getattr(defaults, "attribute_map", {})
    fields = set(defaults.to_dict())
    out = {}
    for canonical, value in (("num_hidden_layers", depth), ("hidden_size", width),
                             ("num_attention_heads", heads)):
        name = next((alias for alias, target in names.items() if target == canonical and alias in fields),
                    canonical)
        out[name if name in fields else canonical] = value
    if "num_key_value_heads" in fields:
        out["num_key_value_heads"] = heads
    if "head_dim" in fields:
        out["head_dim"] = head_dim
    if "intermediate_size" in fields:  # gated (SwiGLU) MLPs: 8/3 x width keeps the 4x MLP's parameters
        out["intermediate_size"] = 64 * math.ceil(8 * width / 3 / 64)
    elif "n_inner" in fields:
        out["n_inner"] = 4 * width
    return out


def initial_model(cfg: PretrainConfig, tokenizer, context):
    """The model training starts from: ``init_from``'s weights (fp32), else random weights from ``model``."""
    if cfg.init_from:
        return prepare_model_for_tokenizer(load_causal_lm(cfg.init_from, context), tokenizer)
    return build_model(build_model_config(context.model or {}, tokenizer), context.hardware)


def build_model(model_config, hardware):
    """A randomly initialised causal LM in fp32 (mixed precision autocasts), SDPA attention by default."""
    return AutoModelForCausalLM.from_config(model_config, attn_implementation=hardware.attn_implementation)


def decay_groups(model, weight_decay: float):
    """AdamW parameter groups: decay on matrices (dim >= 2), none on norms and biases (nanoGPT's rule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def with_loss(model):
    """``model`` wrapped so that its forward takes a ``(batch, block_size + 1)`` token tensor and returns the
    mean next-token cross-entropy (fp32) — nothing else.

    Why: compiled as one graph, the logits (batch x block x vocab, the largest tensor of a small model's
    step) stay inside it: the upcast to fp32 and the softmax fuse into the loss kernel instead of being
    written out and read back, and accelerate's mixed-precision wrapper, which casts every output to fp32,
    sees a scalar. The wrapper is what DDP / FSDP wrap, so gradient sync is unchanged.
    """
    class CausalLMWithLoss(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm
            self._no_split_modules = getattr(lm, "_no_split_modules", None)  # FSDP's transformer wrap policy

        def forward(self, batch):
            logits = self.lm(input_ids=batch[:, :-1]).logits
            return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))

    return CausalLMWithLoss(model)


def without_loss(state_dict: dict) -> dict:
    """The state dict of the model inside :func:`with_loss` (its keys without the ``lm.`` prefix)."""
    return {key.removeprefix("lm."): value for key, value in state_dict.items()}


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6 x parameters + attention (12 x layers x width x seq_len), as PaLM/nanoGPT.

    An untied input embedding is a lookup, not a matmul, so its parameters are left out (the output head's count).
    """
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is not None and head.weight is not embedding.weight:
        n_params -= embedding.weight.numel()
    layers = getattr(config, "num_hidden_layers", 0) or 0
    width = getattr(config, "hidden_size", 0) or 0
    return 6.0 * n_params + 12.0 * layers * width * seq_len


def peak_flops(config_value: float | None, use_cuda: bool) -> float | None:
    """Peak FLOP/s of one device for MFU: the configured value, else a known GPU's bf16 peak, else None."""
    if config_value:
        return config_value * 1e12
    if not use_cuda:
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None
