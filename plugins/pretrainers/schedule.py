"""Learning-rate schedules of the lean loop: linear warmup then cosine to ``min_lr`` (nanoGPT's formula),
warmup-stable-decay, linear, constant (the HF-Trainer plugin maps the same names onto ``TrainingArguments``)."""

from __future__ import annotations

import math

from lmforge.plugins.pretrainers.config import PretrainConfig


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
