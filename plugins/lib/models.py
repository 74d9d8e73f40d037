"""Opening and saving models: one place that turns a model ref into a tokenizer and a causal LM.

Every stage and command that reads a model (finetuner, aligners, reward model, samplers, serve, chat, rank,
evaluators, pretrainer init) goes through here, so a local directory and a Hub id (``org/name[@revision]``,
read from the normal Hugging Face cache) work the same everywhere, with safetensors only and no remote code.
Heavy imports stay inside functions so that listing plugins never imports torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lmforge.errors import ConfigError, MissingArtifact
from lmforge.hub import ResolvedModel, resolve_model_ref


def model_path(ref: str | os.PathLike) -> Path:
    """The local directory of a model ref (a path, or a Hub id resolved through the HF cache)."""
    return resolve_model_ref(ref).path


CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- message['content'] + '<|im_end|>' + '\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LMFORGE_CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
# Special-token look-alikes in a template's string literals: <|im_start|>, <|end|>, <start_of_turn> …
TEMPLATE_TOKEN = re.compile(r"<\|[A-Za-z0-9_.:-]+\|>|<(?:start|end)_of_turn>")
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
PROBE_REPLY = "lmforge-probe-reply"


def _lmforge_template() -> str:
    from lmforge.plugins.tokenizers.subword import chat_template

    # lmforge's own layout, without the content escaping (that needs lmforge's tokenizer normalizer)
    return chat_template(LMFORGE_CHAT_TOKENS).replace("{{- bos_token }}", "{{- bos_token if bos_token else '' }}", 1)


def chat_template_presets() -> dict[str, tuple[str, list[str]]]:
    """Named chat templates: ``name -> (template, its special tokens)``; every one marks the reply for the loss."""
    return {"chatml": (CHATML_TEMPLATE, ["<|im_start|>", "<|im_end|>"]),
            "lmforge": (_lmforge_template(), list(LMFORGE_CHAT_TOKENS))}


def resolve_chat_template(spec: str, key: str = "chat_template") -> tuple[str, list[str]]:
    """``(template, special tokens it uses)`` for a preset name, a .jinja file, or a tokenizer dir / Hub id."""
    presets = chat_template_presets()
    if spec in presets:
        return presets[spec]
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            template = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{key}: cannot read {path} ({exc})") from None
        if "{%" not in template and "{{" not in template:
            raise ConfigError(f"{key}: {path} is not a Jinja chat template (no {{% or {{{{ in it)")
        return template, sorted(set(TEMPLATE_TOKEN.findall(template)))
    try:
        source_dir = resolve_model_ref(spec).path
    except MissingArtifact as exc:
        raise ConfigError(f"{key}: '{spec}' is not a preset ({', '.join(presets)}), a .jinja file, or a tokenizer "
                          f"dir / Hub id: {str(exc).partition(': ')[2]}") from None
    from transformers import AutoTokenizer

    source = AutoTokenizer.from_pretrained(str(source_dir), trust_remote_code=False)
    template = source.chat_template
    if not template or not isinstance(template, str):
        raise ConfigError(f"{key}: the tokenizer in {spec} has no (single) chat template to copy")
    if not GENERATION_MARKER.search(template):
        from trl.chat_template_utils import get_training_chat_template

        try:
            template = get_training_chat_template(source)
        except ValueError:
            raise ConfigError(f"{key}: the chat template of {spec} has no {{% generation %}} markers and TRL knows "
                              "no training variant of it; give a .jinja file with them") from None
    used = [t for t in source.added_tokens_encoder if t in template]
    return template, sorted(set(used) | set(TEMPLATE_TOKEN.findall(template)))


def apply_chat_template_spec(tokenizer, spec: str, key: str = "chat_template"):
    """Give ``tokenizer`` the chat template ``spec`` names: its special tokens added, a pad token set."""
    template, tokens = resolve_chat_template(spec, key)
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab or t not in tokenizer.all_special_tokens]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.chat_template = template
    ensure_pad_token(tokenizer)
    return tokenizer


def ensure_pad_token(tokenizer) -> None:
    """A pad token for batching: the EOS token when there is one (as TRL does), else a new ``<|pad|>``."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})


def pad_token_id(tokenizer) -> int | None:
    """The id a batch is padded with: the tokenizer's pad token, else its EOS (as ``generate`` falls back)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant reply (``<|end|>``, ``<|im_end|>``).

    Found by rendering a one-turn conversation, so any template works; None without a template or when the
    reply is followed by no special token.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": PROBE_REPLY}], tokenize=False)
    except Exception:  # noqa: BLE001 — a template that needs other roles or arguments: no end-of-turn known
        return None
    if not isinstance(text, str) or PROBE_REPLY not in text:
        return None
    rest = text[text.rindex(PROBE_REPLY) + len(PROBE_REPLY):]
    specials = sorted({*tokenizer.all_special_tokens, *tokenizer.added_tokens_encoder}, key=len, reverse=True)
    return next((t for t in specials if t and rest.startswith(t)), None)


def load_tokenizer(ref: str | os.PathLike, chat_template: str | None = None):
    """The tokenizer of a model dir or Hub id, no remote code; ``chat_template`` gives it that template.

    ``chat_template``: a preset (``chatml``, ``lmforge``), a .jinja file, or a tokenizer dir / Hub id to copy
    the template from. Special tokens the template uses are added (resize the model's embeddings to match with
    :func:`prepare_model_for_tokenizer`). A tokenizer without a pad token gets one (its EOS).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path(ref)), trust_remote_code=False)
    if chat_template:
        apply_chat_template_spec(tokenizer, chat_template)
    ensure_pad_token(tokenizer)  # batching needs one; base models (GPT-2 style) ship none
    return tokenizer


def prepare_model_for_tokenizer(model, tokenizer):
    """Make ``model`` fit ``tokenizer``: embeddings resized for added tokens, pad/EOS ids in its configs.

    New rows start at the mean of the old embeddings (transformers' ``mean_resizing``), so added tokens begin
    as an average token rather than noise. The generation config's EOS lists the end-of-turn token beside
    EOS, so a plain ``model.generate`` stops at the end of a reply.
    """
    size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > size:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    set_generation_eos(model, tokenizer)
    return model


def generation_eos_ids(tokenizer) -> list[int]:
    """EOS ids a generation should stop at: the tokenizer's EOS and the chat template's end-of-turn token."""
    ids = [tokenizer.eos_token_id]
    end = end_of_turn_token(tokenizer)
    if end is not None:
        ids.append(tokenizer.convert_tokens_to_ids(end))
    return list(dict.fromkeys(i for i in ids if i is not None))


def set_generation_eos(model, tokenizer) -> None:
    """Write EOS (+ end-of-turn) and pad ids into ``model.generation_config`` (models that generate only).

    Stop ids the config already lists and the vocabulary still holds are kept after these (an outside
    model's own extra stops, such as Llama 3's ``<|eom_id|>``)."""
    config = getattr(model, "generation_config", None)
    can_generate = getattr(model, "can_generate", lambda: False)()
    if config is None or not can_generate:
        return
    existing = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    ids = list(dict.fromkeys([*generation_eos_ids(tokenizer),
                              *(i for i in existing if isinstance(i, int) and 0 <= i < len(tokenizer))]))
    if ids:
        config.eos_token_id = ids if len(ids) > 1 else ids[0]
    if tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id


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
    """Write a plain HF model dir: model.safetensors, config.json, generation_config.json, tokenizer files.

    The generation config lists the end-of-turn token as an EOS beside EOS (``[eos, <|end|>]``), so vanilla
    ``model.generate`` and TRL's GRPO/RLOO rollouts stop at the end of the reply.
    """
    set_generation_eos(model, tokenizer)
    model.save_pretrained(str(output_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(output_dir))


__all__ = ["ResolvedModel", "chat_template_presets", "end_of_turn_token", "generation_eos_ids", "load_causal_lm",
           "load_tokenizer", "model_path", "prepare_model_for_tokenizer", "resolve_model_ref", "save_model_dir"]


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)
