"""Helpers shared by the built-in plugins that wrap Hugging Face trainers.

The trainer arguments every stage shares,
checkpoint discovery for resume, and a callback that forwards trainer logs to lmforge's metrics hook.
Heavy imports stay inside functions so that listing plugins never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.sources import TEXT_SUFFIXES  # noqa: F401

# Data reading lives in one module (lmforge.plugins.data); these names stay importable from here.
from .data import iter_texts, read_records  # noqa: F401


def latest_checkpoint(directory: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` directory under ``directory`` (for resume), or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = [p for p in directory.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
                  and (p / "trainer_state.json").is_file()]
    return str(max(candidates, key=lambda p: int(p.name.split("-")[-1]))) if candidates else None


def trainer_arguments(context, *, max_steps: int, batch_size: int, learning_rate: float, save_steps: int,
                      logging_steps: int, static_shapes: bool = False, **extra) -> dict[str, Any]:
    """Arguments common to ``TrainingArguments`` and TRL configs: checkpoints in the stage's work dir."""
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
        "disable_tqdm": context.quiet,
        **context.hardware.trainer_kwargs(static_shapes=static_shapes),
        **extra,
    }


def metrics_callback(context):
    """A transformers ``TrainerCallback`` that sends every trainer log line to ``context.log_metrics``."""
    from transformers import TrainerCallback

    class LmforgeMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                numeric = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                context.log_metrics(numeric, step=state.global_step)

    return LmforgeMetrics()


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def write_dataset_card(output_dir: str | Path, title: str, pattern: str = "*.parquet") -> None:
    """A README.md whose metadata tells vanilla ``datasets.load_dataset(output_dir)`` which files are data.

    Without it, the manifest and reports beside the parquet shards would be read as data files too.
    """
    card = ("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            f"    path: \"{pattern}\"\n---\n# {title}\n\nWritten by lmforge; see manifest.json for how.\n")
    (Path(output_dir) / "README.md").write_text(card)
