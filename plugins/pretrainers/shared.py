"""What lmforge's pretrainers share: the model from config, the token cache, windows, schedules, FLOPs.

Both the HF-Trainer plugin and the lean accelerate loop train on the same data in the same order, so
their results compare one to one:

- **Continued pretraining**: ``init_from`` (a model dir or Hub id) starts from that model's weights and
  tokenizer instead of random weights from ``model`` config.
- **Model from config**: ``model_type`` plus that type's config fields (unknown field = error), or the
  ``depth`` dial, which derives width, heads and MLP size from the number of layers (as nanochat does:
  width = depth x aspect_ratio, heads of ``head_dim``).
- **Token cache**: the corpus is tokenised once, by every core, into token shards (documents joined with
  eos between them; format in ``token_shards.py``) under a key made of the tokenizer's files and the
  data's hash; later runs, and every rank, memory-map them as one stream.
- **Split**: the first ``1 - val_fraction`` of the token stream trains, the rest validates — a contiguous
  split, as nanoGPT does (for Tiny Shakespeare with the char tokenizer it is exactly its 90/10 split).
- **Windows**: training windows of ``block_size + 1`` tokens start every ``stride`` tokens (stride 1 is
  nanoGPT's random offsets, stride = block_size is plain packing); validation windows never overlap.
  Sample order is a seeded permutation per epoch, a pure function of (seed, step), so a resumed run
  sees exactly the batches an uninterrupted one would.
- **Schedules**: linear warmup then cosine to ``min_lr`` (nanoGPT's formula), warmup-stable-decay,
  linear, constant.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import ConfigError, close_match, one_line

CACHE_FORMAT = 2  # 2: token shards (token_shards.py); 1 was one tokens.npy
SCHEDULERS = ("cosine", "wsd", "linear", "constant")
DEPTH_KEYS = ("depth", "aspect_ratio", "head_dim")
# bf16 dense peak FLOP/s of common accelerators, for MFU (override with pretrainer.peak_tflops).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
               "4090": 165.0, "3090": 71.0, "V100": 125.0}


@dataclass
class PretrainConfig:
    max_steps: int = 200
    batch_size: int = 8  # sequences per device per micro-step
    grad_accum: int = 1
    block_size: int = 128  # tokens of context per sequence
    stride: int | None = None  # training window start every `stride` tokens; None = block_size (packing)
    val_fraction: float = 0.05  # tail share of the token stream held out for validation
    learning_rate: float = 1e-3
    min_lr: float = 0.0  # where cosine / wsd / linear decay ends
    lr_scheduler: str = "cosine"  # cosine | wsd | linear | constant
    warmup_steps: int = 20
    decay_steps: int | None = None  # wsd: length of the final decay (None = 20% of max_steps)
    weight_decay: float = 0.1  # on matrices only, not norms / biases
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # 0 = no clipping
    eval_steps: int = 100
    eval_batches: int | None = None  # None = the whole validation split
    eval_batch_size: int | None = None  # None = batch_size
    save_steps: int = 50
    logging_steps: int = 10
    text_field: str = "text"
    cache_dir: str | None = None  # token cache; None = $LMFORGE_CACHE_DIR or ~/.cache/lmforge/tokens
    tokenize_workers: int | None = None  # processes that tokenise the corpus into shards; None = every core
    peak_tflops: float | None = None  # for MFU; None = known GPUs only
    compile: bool | None = None  # torch.compile the model; None = hardware.compile
    init_from: str | None = None  # continued pretraining: a model dir or Hub id (its weights and tokenizer)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        if self.lr_scheduler not in SCHEDULERS:
            raise ConfigError(f"pretrainer.lr_scheduler: unknown '{self.lr_scheduler}'"
                              f"{close_match(self.lr_scheduler, SCHEDULERS)}; one of {', '.join(SCHEDULERS)}")
        for key in ("max_steps", "batch_size", "grad_accum", "block_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"pretrainer.{key}: must be >= 1, got {getattr(self, key)}")
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"pretrainer.stride: must be >= 1 or null, got {self.stride}")
        if self.tokenize_workers is not None and self.tokenize_workers < 1:
            raise ConfigError(f"pretrainer.tokenize_workers: must be >= 1 or null, got {self.tokenize_workers}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"pretrainer.val_fraction: must be in [0, 1), got {self.val_fraction}")


# ---------------------------------------------------------------- model

def build_model_config(model_cfg: dict, tokenizer):
    """``{"model_type": "llama", "hidden_size": 64, …}`` -> a transformers config; unknown fields are errors.

    ``depth`` (with optional ``aspect_ratio``, default 64, and ``head_dim``, default 128) derives
    ``num_hidden_layers``, ``hidden_size``, heads and MLP width, so one number scales the model.
    """
    from transformers import AutoConfig

    model_cfg = dict(model_cfg)
    model_type = model_cfg.pop("model_type", "llama")
    try:
        defaults = AutoConfig.for_model(model_type)
    except ValueError:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

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


def pretrain_tokenizer_dir(cfg: PretrainConfig, inputs: dict) -> Path:
    """The tokenizer to train with: the ``tokenizer`` input, or with ``init_from`` that model's own."""
    from lmforge.plugins.lib.models import model_path

    tokenizer_dir = model_path(inputs["tokenizer"])
    if cfg.init_from:
        own = model_path(cfg.init_from)
        if tokenizer_dir.resolve() != own.resolve():
            raise ConfigError(f"pretrainer.init_from: continued pretraining uses the model's own tokenizer, but the "
                              f"tokenizer input is {inputs['tokenizer']}; run pipeline=continue_pretrain (or pass "
                              f"the model as the tokenizer input)")
    return tokenizer_dir


def initial_model(cfg: PretrainConfig, tokenizer, context):
    """The model training starts from: ``init_from``'s weights (fp32), else random weights from ``model``."""
    if cfg.init_from:
        from lmforge.plugins.lib.models import load_causal_lm, prepare_model_for_tokenizer

        return prepare_model_for_tokenizer(load_causal_lm(cfg.init_from, context), tokenizer)
    return build_model(build_model_config(context.model or {}, tokenizer), context.hardware)


def build_model(model_config, hardware):
    """A randomly initialised causal LM in fp32 (mixed precision autocasts), SDPA attention by default."""
    from transformers import AutoModelForCausalLM

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
    import torch
    import torch.nn.functional as F

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
    import torch

    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


# ---------------------------------------------------------------- data

def cache_root(cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("LMFORGE_CACHE_DIR")
    return Path(env) / "tokens" if env else Path.home() / ".cache" / "lmforge" / "tokens"


def tokenizer_hash(tokenizer_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        file = Path(tokenizer_dir) / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def tokenized_corpus(text_path: Path, tokenizer_dir: Path, tokenizer, text_field: str, cache_dir: str | None,
                     quiet: bool = True, workers: int | None = None):
    """The corpus as one token stream (eos between documents), from the cache or tokenised now.

    Returns ``(tokens, meta)``: a :class:`~.token_shards.TokenStream` over memory-mapped token shards
    (indexed like a 1-D numpy array) and ``{"tokens", "bytes", "documents", "key"}``. The cache key covers
    the tokenizer's files, the data's content hash and the text field; a missing entry is built by
    ``workers`` processes (None = every core), resuming a build that was killed (see ``token_shards``).
    """
    from lmforge import sources
    from lmforge.plugins.pretrainers.token_shards import TokenStream, build_shards

    key = hashlib.sha256(json.dumps([CACHE_FORMAT, tokenizer_hash(tokenizer_dir), sources.input_hash(text_path),
                                     text_field]).encode()).hexdigest()[:24]
    entry = cache_root(cache_dir) / key
    if not (entry / "index.json").is_file():
        build_shards(text_path, tokenizer, text_field, entry, workers=workers, quiet=quiet, key=key)
    tokens, index = TokenStream.open(entry)
    return tokens, {"tokens": index["tokens"], "bytes": index["bytes"], "documents": index["documents"], "key": key}


def split_tokens(tokens, val_fraction: float):
    """nanoGPT's contiguous split: the first int(n * (1 - val_fraction)) tokens train, the rest validate."""
    cut = int(len(tokens) * (1.0 - val_fraction)) if val_fraction > 0 else len(tokens)
    return tokens[:cut], tokens[cut:]


class Windows:
    """Windows of ``block_size + 1`` tokens starting every ``stride`` tokens of a token array."""

    def __init__(self, tokens, block_size: int, stride: int):
        self.tokens, self.block_size, self.stride = tokens, block_size, stride
        span = block_size + 1
        self.count = (len(tokens) - span) // stride + 1 if len(tokens) >= span else 0

    def __len__(self) -> int:
        return self.count

    def batch(self, indices):
        """(len(indices), block_size + 1) int64 tensor."""
        import numpy as np
        import torch

        starts = np.asarray(indices, dtype=np.int64) * self.stride
        rows = starts[:, None] + np.arange(self.block_size + 1)[None, :]
        return torch.from_numpy(np.asarray(self.tokens[rows], dtype=np.int64))


class SampleOrder:
    """Which window each training sample reads: a seeded permutation per epoch, a pure function of position."""

    def __init__(self, n_windows: int, seed: int):
        self.n, self.seed = n_windows, seed
        self._epoch, self._perm = -1, None

    def windows(self, first: int, count: int):
        import torch

        out = []
        for position in range(first, first + count):
            epoch, offset = divmod(position, self.n)
            if epoch != self._epoch:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._perm, self._epoch = torch.randperm(self.n, generator=generator).tolist(), epoch
            out.append(self._perm[offset])
        return out


def sample_position(step: int, micro: int, rank: int, *, grad_accum: int, world: int, batch_size: int) -> int:
    """First global sample index of (step, micro-step, rank); one process with world x batch reads the same."""
    return ((step * grad_accum + micro) * world + rank) * batch_size


# ---------------------------------------------------------------- schedule

def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based)."""
    peak, floor, total = cfg.learning_rate, cfg.min_lr, cfg.max_steps
    if step < cfg.warmup_steps:
        return peak * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.lr_scheduler == "constant":
        return peak
    if cfg.lr_scheduler == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)
    if cfg.lr_scheduler == "linear":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return peak + (floor - peak) * progress
    decay = cfg.decay_steps if cfg.decay_steps is not None else max(1, int(0.2 * total))
    decay_start = max(cfg.warmup_steps, total - decay)
    if step < decay_start:
        return peak
    progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
    return peak + (floor - peak) * progress


# --- the corpus both pretrainers train on (lean_loop.py and hf_trainer.py) ---------------------------------

@dataclass
class Corpus:
    """The token windows a run trains and validates on."""

    train: Windows
    val: Windows
    train_tokens: int
    val_tokens: int
    bytes_per_token: float


def load_corpus(cfg: PretrainConfig, inputs, context, main: bool):
    """The tokenizer and the token windows, split into train and validation (nanoGPT's contiguous split)."""
    from lmforge.plugins.lib.checkpoints import split_too_short
    from lmforge.plugins.lib.models import load_tokenizer

    tokenizer_dir = pretrain_tokenizer_dir(cfg, inputs)
    tokenizer = load_tokenizer(tokenizer_dir)
    # the first process of each machine to take the cache's file lock tokenises (all cores); the others
    # wait on the lock (not in a collective, so no NCCL/gloo timeout however long it takes), then map it
    tokens, meta = tokenized_corpus(inputs["text"], tokenizer_dir, tokenizer, cfg.text_field,
                                    cfg.cache_dir, quiet=context.quiet or not main, workers=cfg.tokenize_workers)
    train_tokens, val_tokens = split_tokens(tokens, cfg.val_fraction)
    train = Windows(train_tokens, cfg.block_size, cfg.stride or cfg.block_size)
    if len(train) == 0:
        raise split_too_short(len(train_tokens), cfg.block_size)
    return tokenizer, Corpus(train, Windows(val_tokens, cfg.block_size, cfg.block_size), len(train_tokens),
                             len(val_tokens), meta["bytes"] / max(meta["tokens"], 1))


def training_summary(corpus: Corpus, val_windows: int, val_loss: float | None, **run) -> dict:
    """What a pretrainer reports at the end (metrics and ``train_summary.json``): windows and tokens of each
    split, bytes per token, the ``run`` facts it passes (steps, resumed step, world size …), and from the
    validation loss, when there is one, its perplexity and bits per byte."""
    summary = {"train_windows": len(corpus.train), "val_windows": val_windows, "train_tokens": corpus.train_tokens,
               "val_tokens": corpus.val_tokens, "bytes_per_token": corpus.bytes_per_token, **run}
    if val_loss is not None:
        summary.update(val_loss=val_loss, perplexity=math.exp(min(val_loss, 50)),
                       bits_per_byte=val_loss / math.log(2) / corpus.bytes_per_token)
    return summary
