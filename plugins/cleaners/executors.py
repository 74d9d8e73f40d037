"""The standard cleaner on datatrove's executors: ``cleaner.executor=local|ray|slurm``.

Why datatrove's executors rather than a scheduler of our own: they already run tasks as local processes,
Slurm array jobs and Ray tasks, keep a completion file per finished task (a rerun redoes only the rest)
and per-task stats. What runs inside the tasks is lmforge's own steps, so the kept documents are exactly
the in-process cleaner's, byte for byte. Three parts:

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
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datatrove.executor.slurm as datatrove_slurm
import datatrove.utils.logging as datatrove_logging
from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.stats import PipelineStats
from lmforge.errors import ConfigError, DataError, LmforgeError
from lmforge.plugins.cleaners.basic import build_steps
from lmforge.plugins.cleaners.web import is_extracted
from lmforge.plugins.lib.data import BadRecord, iter_rows

RESULTS = "results"


def check_executor(cfg) -> None:
    """Plan-time checks of the executor options (one line naming the key)."""
    if cfg.executor == "ray":
        try:
            import ray  # noqa: F401 - only whether it is installed
        except ImportError:
            raise ConfigError("cleaner.executor=ray: Ray is not installed; pip install 'lmforge[datatrove,ray]'") from None
    if cfg.executor == "slurm" and not cfg.slurm.dry_run:
        if not cfg.slurm.partition:
            raise ConfigError("cleaner.slurm.partition: required by cleaner.executor=slurm")
        if shutil.which("sbatch") is None:
            raise ConfigError("cleaner.executor=slurm: no `sbatch` on PATH (run on a Slurm login node, "
                              "or set cleaner.slurm.dry_run=true to write the scripts only)")


def task_count(cfg) -> int:
    return cfg.tasks or os.cpu_count() or 1


def run_on_executor(cleaner, source, output_dir: Path, context, process_batch) -> Path:
    """Shard, map on the executor, decide on the executor, then move the result into ``output_dir``.
    ``process_batch``: the in-process cleaner's per-document function (standard.py), run by the map tasks;
    the decide task calls ``cleaner.clean`` with the map's results."""
    cfg = cleaner.config
    check_executor(cfg)
    work = context.checkpoint_dir() / "executor"
    tasks = task_count(cfg)
    final = work / "final"
    with console_to(work / "logs" / "console.log"):
        docs, tasks = write_shards(cfg, source, work / "shards", tasks)
        tasks = min(tasks, docs)
        mapper = make_executor(cfg, [MapTask(cfg.steps, cfg.allowed_ids, str(work), cfg.batch_size, process_batch)],
                               tasks, work / "logs" / "map", "map")
        decider = make_executor(cfg, [DecideTask(cleaner, source, str(work), tasks)], 1, work / "logs" / "decide",
                                "decide", depends=mapper)
        if not context.quiet:
            print(f"cleaning on datatrove's {cfg.executor} executor: {docs:,} documents in {tasks} tasks\n"
                  f"  datatrove's logs: {work / 'logs'}", flush=True)
        with task_progress([("map", mapper), ("decide", decider)], context.quiet):
            launch(cfg, mapper, decider, work)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = json.loads((final / "report.json").read_text())
    report["executor"] = {"name": cfg.executor, "tasks": tasks, "workers": cfg.workers or tasks,
                          "map": merged_stats(work / "logs" / "map"),
                          "decide": merged_stats(work / "logs" / "decide")}
    for item in final.iterdir():
        if item.name != "report.json":
            shutil.copy2(item, output_dir / item.name)
    (output_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    context.log_metrics({"docs_in": report["docs_in"], "docs_out": report["docs_out"],
                         "chars_out": report["chars_out"], "mb_per_s": report["mb_per_s"]})
    return output_dir


# ---- 1. shard --------------------------------------------------------------------------------------------
def write_shards(cfg, source, shards: Path, tasks: int) -> tuple[int, int]:
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
        for item in iter_rows(source, cfg.text_field, cfg.txt_mode, workers=cfg.workers or 1):
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


# ---- executors -------------------------------------------------------------------------------------------
def make_executor(cfg, pipeline: list, tasks: int, logs: Path, stage: str, depends=None):
    workers = cfg.workers or -1
    if cfg.executor == "local":
        return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=cfg.workers or os.cpu_count() or 1,
                                     logging_dir=str(logs), depends=depends, start_method="spawn")
    if cfg.executor == "ray":
        return RayPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(logs),
                                   depends=depends, cpus_per_task=cfg.ray.cpus_per_task,
                                   mem_per_cpu_gb=cfg.ray.mem_per_cpu_gb)
    slurm = cfg.slurm
    sbatch_args = dict(slurm.sbatch_args)
    if slurm.account:
        sbatch_args["account"] = slurm.account
    return SlurmPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(logs),
                                 depends=depends, job_name=f"lmforge-clean-{stage}", time=slurm.time,
                                 partition=slurm.partition or "PARTITION", cpus_per_task=slurm.cpus_per_task,
                                 mem_per_cpu_gb=slurm.mem_per_cpu_gb, env_command=slurm.env_command or None,
                                 sbatch_args=sbatch_args, slurm_logs_folder=str(logs / "slurm_logs"))


def launch(cfg, mapper, decider, work: Path) -> None:
    """Run both executor stages to the end (Slurm: submit both, then wait for the completion files)."""
    if cfg.executor == "slurm":
        run_on_slurm(cfg, decider, work)
    else:
        with ray_cluster(cfg.ray.address) if cfg.executor == "ray" else contextlib.nullcontext():
            for executor, stage in ((mapper, "map"), (decider, "decide")):
                try:
                    executor.run()
                except LmforgeError:
                    raise
                except Exception as exc:
                    _raise_if_incomplete(executor, stage, exc)
                    raise
                _raise_if_incomplete(executor, stage)
    _raise_if_incomplete(mapper, "map")
    _raise_if_incomplete(decider, "decide")


def _raise_if_incomplete(executor, stage: str, exc: BaseException | None = None) -> None:
    missing = executor.get_incomplete_ranks(skip_completed=True)
    if not missing:
        return
    logs = Path(executor.logging_dir.path) / "logs"
    why = f" ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})" if exc else ""
    raise LmforgeError(f"cleaner: {len(missing)} of {executor.world_size} {stage} task(s) did not finish, first "
                       f"task {missing[0]}{why}; its log: {logs / f'task_{missing[0]:05d}.log'}; a rerun keeps "
                       "the finished tasks")


@contextlib.contextmanager
def ray_cluster(address: str):
    """Connect to the Ray at ``address``, or start one on this machine (127.0.0.1) for the run."""
    import ray

    started = False
    if not ray.is_initialized():
        options = {"address": address} if address else {"include_dashboard": False, "num_cpus": os.cpu_count()}
        ray.init(log_to_driver=False, logging_level="ERROR", **options)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def run_on_slurm(cfg, decider, work: Path) -> None:
    """Submit the map array job and the decide job after it; wait for them (or, dry run: write the scripts)."""
    if cfg.slurm.dry_run:
        scripts = []

        def write_only(contents, _retriever, *args):
            head, _, body = contents.partition("\n")
            scripts.append(f"{head}\n# submitted as: sbatch {' '.join(args)} <this file>\n{body}")
            return f"dry-run-{len(scripts)}"

        with _replaced(datatrove_slurm, "launch_slurm_job", write_only):
            decider.launch_job()
        paths = []
        for number, script in enumerate(scripts):
            path = work / f"sbatch-{number}.slurm"
            path.write_text(script)
            paths.append(str(path))
        raise LmforgeError(f"cleaner.slurm.dry_run: wrote {len(paths)} sbatch scripts, nothing submitted: "
                           f"{', '.join(paths)}")
    decider.launch_job()
    while decider.get_incomplete_ranks(skip_completed=True):
        jobs = [str(j) for j in (decider.depends_job_id, decider.job_id) if j not in (None, -1)]
        alive = subprocess.run(["squeue", "-h", "-j", ",".join(jobs)], check=False, capture_output=True,
                               text=True).stdout
        if jobs and not alive.strip() and decider.get_incomplete_ranks(skip_completed=True):
            break
        time.sleep(30)


@contextlib.contextmanager
def _replaced(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def task_progress(stages: list[tuple[str, Any]], quiet: bool, every: float = 5.0):
    """A line each time another tenth of a stage's tasks has finished (read from datatrove's completion
    files, so it works for every executor); on stdout, which the run's live display prints above itself."""
    stop = threading.Event()

    def watch():
        shown: dict[str, int] = {}
        while not stop.wait(every):
            for stage, executor in stages:
                total = executor.world_size
                done = total - len(executor.get_incomplete_ranks(skip_completed=True))
                if done and done * 10 // total > shown.get(stage, 0):
                    shown[stage] = done * 10 // total
                    print(f"  {stage} tasks done: {done} of {total}", flush=True)

    thread = threading.Thread(target=watch, name="lmforge-task-progress", daemon=True)
    if not quiet:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()


@contextlib.contextmanager
def console_to(path: Path):
    """datatrove's console lines go to ``path``: its task processes' (they inherit file descriptor 2, pointed
    at ``path``) and this process's (datatrove's stderr sinks, through its logging module's ``sys``); lmforge's
    own output (the run's display on ``sys.stderr``, lines on stdout) still reaches the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a", encoding="utf-8") as log, os.fdopen(os.dup(saved), "w", buffering=1) as terminal:
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stderr(terminal), \
                    _replaced(datatrove_logging, "sys", SimpleNamespace(stderr=log, stdout=sys.stdout)):
                yield
        finally:
            log.flush()
            terminal.flush()
            os.dup2(saved, 2)
            os.close(saved)


def merged_stats(logs: Path) -> list[dict]:
    """datatrove's per-task stats of one executor stage, summed: per step, its seconds and counts."""
    files = sorted((logs / "stats").glob("*.json"))
    total = sum((PipelineStats.from_json(json.loads(f.read_text())) for f in files), start=PipelineStats())
    return [{"step": step.name, "seconds": round(getattr(step.time_stats, "total", 0.0), 3),
             "counts": {key: getattr(metric, "total", metric) for key, metric in step.stats.items()}}
            for step in total.stats]
