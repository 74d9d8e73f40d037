"""Helpers shared by the built-in plugins: reading data files with clear errors, loading text datasets,
opening and saving models. (Trainer plumbing lives in ``training.py``, checkpoints in ``checkpoints.py``.)
Heavy imports stay inside functions so that listing plugins never imports torch.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import DataError

TEXT_SUFFIXES = (".txt", ".text", ".md")


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of a .json (a list) or .jsonl(.gz) file; a malformed line raises ``DataError`` with file:line."""
    path = Path(path)
    inner = path.with_suffix("") if path.suffix == ".gz" else path
    try:
        with _open_text(path) as handle:
            if inner.suffix == ".json":
                try:
                    data = json.load(handle)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
                if isinstance(data, dict):
                    data = next((v for v in data.values() if isinstance(v, list)), [data])
                records = data
            else:
                records = []
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{number}: invalid JSON line ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start}") from None
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {index} is a {type(record).__name__}, expected a JSON object")
    if not records:
        raise DataError(f"{path}: no records")
    return records


def iter_texts(path: str | Path, text_field: str = "text", batch_size: int = 1000) -> Iterator[list[str]]:
    """Batches of texts from a dataset dir (parquet/arrow/saved), .jsonl/.json/.parquet or .txt, streamed."""
    path = Path(path)
    if path.is_dir():
        parquet = sorted(path.rglob("*.parquet"))
        if parquet:
            import pyarrow.parquet as pq

            for file in parquet:
                table = pq.ParquetFile(file)
                if text_field not in table.schema_arrow.names:
                    raise DataError(f"{file}: no '{text_field}' column; columns: {', '.join(table.schema_arrow.names)}")
                for batch in table.iter_batches(batch_size=batch_size, columns=[text_field]):
                    yield batch.column(0).to_pylist()
            return
        from datasets import load_from_disk

        dataset = load_from_disk(str(path))
        for start in range(0, len(dataset), batch_size):
            yield dataset[start:start + batch_size][text_field]
        return
    if path.suffix in TEXT_SUFFIXES:
        with _open_text(path) as handle:
            yield [handle.read()]
        return
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=[text_field]):
            yield batch.column(0).to_pylist()
        return
    records = read_records(path)
    for index, record in enumerate(records):
        if not isinstance(record.get(text_field), str):
            raise DataError(f"{path}: record {index} has no string field '{text_field}'")
    texts = [r[text_field] for r in records]
    for start in range(0, len(texts), batch_size):
        yield texts[start:start + batch_size]


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


def load_causal_lm(path: str | Path, context=None, inference: bool = False):
    """A causal LM from a model dir, safetensors only, no remote code.

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
        str(path), dtype=dtype, use_safetensors=True, trust_remote_code=False,
        attn_implementation=context.hardware.attn_implementation if context else "sdpa",
    )


def save_model_dir(model, tokenizer, output_dir: str | Path) -> None:
    """Write a plain HF model dir: model.safetensors, config.json, generation_config.json, tokenizer files."""
    model.save_pretrained(str(output_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(output_dir))


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
