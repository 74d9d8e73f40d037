"""Small helpers shared by the built-in plugins: seeding and the dataset card of written datasets.

Data reading lives in ``data.py``, models in ``models.py``, trainer plumbing in ``training.py`` and
checkpoints in ``checkpoints.py``; the reading names stay importable from here. Heavy imports stay
inside functions so that listing plugins never imports torch.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.sources import TEXT_SUFFIXES  # noqa: F401

# Data reading lives in one module (lmforge.plugins.data); these names stay importable from here.
from .data import iter_texts, read_records  # noqa: F401


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
