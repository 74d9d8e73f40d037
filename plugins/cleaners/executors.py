"""The standard cleaner on datatrove's executors: ``cleaner.executor=local|ray|slurm``.

The executors themselves, their options and the running of their stages are shared with the pretrainer's
token-shard build (``lib/executors.py``, which says why datatrove's). What runs inside the tasks here is
lmforge's own steps, so the kept documents are exactly the in-process cleaner's, byte for byte. Three parts:

1. shard (this process): the input, read by lmforge's readers (every container the in-process cleaner
   reads, bad records under ``on_bad_input``), dealt round-robin into ``tasks`` jsonl.gz shards;
2. map (``tasks`` executor tasks): every per-document step on each shard (drops, edits, annotations) and
   the dedup steps' signatures, written per task;
3. decide (one executor task, after map): the dedup steps' decisions, which are global, in document
   order, then the kept documents as parquet shards with removed.jsonl and report.json, as in-process.

Everything lives in the stage's work dir (``runs/<name>/.work/cleaner/executor``; on a cluster, the run
root must be on a file system every node sees): shards, results, and datatrove's logs (``logs/map``,
``logs/decide``: completions, per-task stats and log files). A task that fails is named in one line
with its log file, never dropped; the rerun keeps the finished tasks. datatrove's stats of both stages
are merged into report.json (``executor``) and so into the run's report.

datatrove's own MinHash stages (``engines.minhash_stages``) are not what ``minhash_dedup`` runs here:
they hash differently and so keep different near-duplicates; the decide task keeps the in-process
result instead (its memory is the dedup signatures, as in-process).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep
from lmforge.errors import DataError
from lmforge.plugins.cleaners.basic import build_steps
from lmforge.plugins.cleaners.web import is_extracted
from lmforge.plugins.lib.data import BadRecord, iter_rows
from lmforge.plugins.lib.executors import (
    check_executor,
    console_to,
    make_executor,
    merged_stats,
    run_stages,
    task_progress,
)

RESULTS = "results"


def task_count(cfg) -> int:
    return cfg.tasks or os.cpu_count() or 1


def run_on_executor(cleaner, source, output_dir: Path, context, process_batch, read_workers: int = 1) -> Path:
    """Shard, map on the executor, decide on the executor, then move the result into ``output_dir``.
    ``process_batch``: the in-process cleaner's per-document function (standard.py), run by the map tasks;
    the decide task calls ``cleaner.clean`` with the map's results. ``read_workers``: processes extracting
    HTML / WARC articles in the shard step (as in-process: every core for a large input)."""
    cfg = cleaner.config
    choice = cfg.executor_choice()
    check_executor(choice)
    work = context.checkpoint_dir() / "executor"
    tasks = task_count(cfg)
    final = work / "final"
    with console_to(work / "logs" / "console.log"):
        docs, tasks = write_shards(cfg, source, work / "shards", tasks, read_workers)
        tasks = min(tasks, docs)
        mapper = make_executor(choice, [MapTask(cfg.steps, cfg.allowed_ids, str(work), cfg.batch_size, process_batch)],
                               tasks, work / "logs" / "map", "map")
        decider = make_executor(choice, [DecideTask(cleaner, source, str(work), tasks)], 1, work / "logs" / "decide",
                                "decide", depends=mapper)
        if not context.quiet:
            print(f"cleaning on datatrove's {cfg.executor} executor: {docs:,} documents in {tasks} tasks\n"
                  f"  datatrove's logs: {work / 'logs'}", flush=True)
        with task_progress([("map", mapper), ("decide", decider)], context.quiet):
            run_stages(choice, [("map", mapper), ("decide", decider)], work, "cleaner")
    output_dir.mkdir(parents=True, exist_ok=True)
    report = json.loads((final / "report.json").read_text())
    report["executor"] = {"name": cfg.executor, "tasks": tasks, "workers": cfg.workers or tasks,
                          "map": merged_stats(work / "logs" / "map"),
                          "decide": merged_stats(work / "logs" / "decide")}
    for item in final.iterdir():
        if item.name != "report.json":
            shutil.copy2(item, output_dir / item.name)  # copied: a rerun after a kill here copies again
    (output_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    cleaner.log_report(context, report)
    return output_dir


# ---- 1. shard --------------------------------------------------------------------------------------------
def write_shards(cfg, source, shards: Path, tasks: int, read_workers: int = 1) -> tuple[int, int]:
    """Deal the input's records round-robin into ``tasks`` shards (record ``i`` to shard ``i % tasks``);
    (documents, tasks), as first written when a rerun finds the shards done."""
    done = shards / "DONE.json"
    if done.is_file():
        written = json.loads(done.read_text())
        return written["docs"], written["tasks"]
    partial = shards.with_name(shards.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    docs = 0
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(gzip.open(partial / f"shard-{rank:05d}.jsonl.gz", "wt", encoding="utf-8"))
                 for rank in range(tasks)]
        for item in iter_rows(source, cfg.text_field, cfg.txt_mode, workers=read_workers):
            if isinstance(item, BadRecord):
                if cfg.on_bad_input == "fail":
                    raise DataError(f"{item.where}: {item.problem}")
                continue
            files[docs % tasks].write(json.dumps({"id": docs, "text": item.fields[cfg.text_field],
                                                  "extracted": is_extracted(item.origin)}) + "\n")
            docs += 1
    if docs == 0:
        raise DataError(f"{source}: no documents in the input")
    (partial / "DONE.json").write_text(json.dumps({"docs": docs, "tasks": tasks}))
    shutil.rmtree(shards, ignore_errors=True)
    partial.rename(shards)
    return docs, tasks


# ---- 2. map ----------------------------------------------------------------------------------------------
class MapTask(PipelineStep):
    """Every per-document step over one shard; results (in shard order) to ``results/<rank>.pkl``."""

    name = "lmforge steps (per document)"
    type = "🧹 - CLEAN"

    def __init__(self, specs: list[Any], allowed: list[str], work: str, batch_size: int, process_batch):
        super().__init__()
        self.specs, self.allowed, self.work, self.batch_size = list(specs), list(allowed), work, batch_size
        self.process_batch = process_batch
        build_steps(self.specs)  # a bad step config fails here, not inside a remote task

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        steps = build_steps(self.specs)
        names = [getattr(s, "name", "") or type(s).__name__ for s in steps]
        allowed = frozenset(self.allowed)
        results = Path(self.work) / RESULTS
        results.mkdir(parents=True, exist_ok=True)
        seconds = [0.0] * len(steps)
        partial = results / f"{rank:05d}.pkl.partial"
        with gzip.open(Path(self.work) / "shards" / f"shard-{rank:05d}.jsonl.gz", "rt", encoding="utf-8") as shard, \
                open(partial, "wb") as out:
            for batch in _batched(shard, self.batch_size):
                docs = [json.loads(line) for line in batch]
                with self.track_time(unit="batch"):
                    computed, batch_seconds = self.process_batch([d["text"] for d in docs], steps, allowed,
                                                                 [d["extracted"] for d in docs])
                seconds = [a + b for a, b in zip(seconds, batch_seconds)]
                for doc, result in zip(docs, computed):
                    pickle.dump((doc["id"], result), out, protocol=pickle.HIGHEST_PROTOCOL)
                    self.stat_update("documents")
                    if result[1] >= 0:
                        self.stat_update(f"dropped_{names[result[1]]}:{result[2]}")
                    else:
                        self.stat_update("forwarded")
        (results / f"{rank:05d}.seconds.json").write_text(json.dumps(seconds))
        os.replace(partial, results / f"{rank:05d}.pkl")
        yield from ()


def _batched(lines, size: int) -> Iterator[list[str]]:
    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---- 3. decide -------------------------------------------------------------------------------------------
class DecideTask(PipelineStep):
    """The dedup decisions in document order and the output files, into ``final/``."""

    name = "lmforge dedup decisions + output"
    type = "🫂 - DEDUP"

    def __init__(self, cleaner, source, work: str, tasks: int):
        super().__init__()
        self.cleaner, self.source, self.work, self.tasks = cleaner, source, work, tasks

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        work = Path(self.work)
        results = work / RESULTS
        streams = [_pickled(results / f"{r:05d}.pkl") for r in range(self.tasks)]
        seconds = None
        for r in range(self.tasks):
            part = json.loads((results / f"{r:05d}.seconds.json").read_text())
            seconds = part if seconds is None else [a + b for a, b in zip(seconds, part)]

        def computed():
            for index in count():
                doc_id, result = next(streams[index % self.tasks])
                if doc_id != index:
                    raise DataError(f"{results}: result {doc_id} where {index} was due (shards and results "
                                    "disagree; delete the stage's work dir and rerun)")
                self.stat_update("documents")
                yield result

        partial = work / "final.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with self.track_time(unit="run"):
            self.cleaner.clean(self.source, partial, None, computed=computed(), seconds=seconds)
        shutil.rmtree(work / "final", ignore_errors=True)
        partial.rename(work / "final")
        yield from ()


def _pickled(path: Path) -> Iterator[tuple[int, tuple]]:
    """The records of a results file written by ``MapTask`` (our own file, in our own work dir)."""
    with open(path, "rb") as handle:
        while True:
            try:
                yield pickle.load(handle)
            except EOFError:
                return


