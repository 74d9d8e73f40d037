"""The pretrainer's token shards built on datatrove's executors: ``pretrainer.tokenize_executor=local|ray|slurm``.

Why datatrove's ``DocumentTokenizer`` rather than lmforge's own shard build on each task: it already reads and
writes sharded files on any file system, and its ``.ds`` output is what the pretrainer reads from other
machines anyway (``shard_input.py``). The executor, its options and its running are the cleaner's
(``lib/executors.py``), so the shard build runs where the cleaning ran (local processes, a Ray cluster, Slurm
array jobs).

The build goes into the token cache like the in-process one, under its own key (datatrove's layout puts the
eos after every document, lmforge's between them): ``<key>.partial/`` while tasks run (a rerun keeps the
finished ones, datatrove's completion files under ``<key>.logs/``), renamed to ``<key>/`` when all are done.
Documents keep their order within each input file (no shuffling); files are dealt to tasks as datatrove's
readers do. The input must be JSONL or Parquet files (the cleaner's output is Parquet).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from filelock import FileLock
from lmforge.errors import ConfigError
from lmforge.plugins.lib.executors import (
    check_executor,
    console_to,
    make_executor,
    run_stages,
    task_progress,
)
from lmforge.sources import resolve_data, suffix_of

READERS = {".parquet": "ParquetReader", ".jsonl": "JsonlReader", ".jsonl.gz": "JsonlReader"}


def input_files(text) -> tuple[Path, str, list[Path]]:
    """(folder, reader, files) of a text input datatrove can read; else one line naming the key."""
    files = [Path(f) for f in resolve_data(text).files()]
    kinds = {READERS.get(suffix_of(f)) for f in files}
    if not files or None in kinds or len(kinds) > 1:
        found = ", ".join(sorted({suffix_of(f) or f.name for f in files})) or "no files"
        raise ConfigError(f"pretrainer.tokenize_executor: the text input must be JSONL or Parquet files for "
                          f"datatrove's readers (the cleaner's output is Parquet); {text} holds {found}")
    folder = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    return folder, kinds.pop(), [f.resolve() for f in files]


def build_on_executor(cfg, text, tokenizer_dir: Path, tokenizer, text_field: str, entry: Path, quiet: bool) -> None:
    """Tokenise ``text`` into ``entry`` (datatrove's ``.ds`` layout) with DocumentTokenizer tasks."""
    from datatrove.pipeline import readers
    from datatrove.pipeline.tokens import DocumentTokenizer

    choice = cfg.tokenize_choice()
    check_executor(choice)
    folder, reader_name, files = input_files(text)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry.with_name(entry.name + ".lock"))):
        if entry.is_dir():  # another process built it while we waited for the lock
            return
        partial, logs = entry.with_name(entry.name + ".partial"), entry.with_name(entry.name + ".logs")
        tasks = min(cfg.tokenize_tasks or len(files), len(files))
        names = [str(f.relative_to(folder)) for f in files]
        paths_file = logs / "files.txt"
        paths_file.parent.mkdir(parents=True, exist_ok=True)
        paths_file.write_text("\n".join(names) + "\n")
        reader = getattr(readers, reader_name)(str(folder), paths_file=str(paths_file), text_key=text_field)
        tokenize = DocumentTokenizer(str(partial), str(Path(tokenizer_dir) / "tokenizer.json"),
                                     eos_token=tokenizer.eos_token, shuffle_documents=False)
        executor = make_executor(choice, [reader, tokenize], tasks, logs, "shards")
        if not quiet:
            print(f"tokenising on datatrove's {choice.name} executor: {len(files)} files in {tasks} tasks\n"
                  f"  datatrove's logs: {logs}", flush=True)
        with console_to(logs / "console.log"), task_progress([("tokenize", executor)], quiet):
            run_stages(choice, [("tokenize", executor)], logs, "pretrainer")
        partial.rename(entry)
        shutil.rmtree(logs, ignore_errors=True)
