"""The standard cleaner: the full curation recipe, streamed, parallel over cores, deterministic.

Default steps, in FineWeb's order: normalise -> page chrome out of text inputs -> language (fastText lid.176,
en >= 0.65) -> Gopher repetition -> Gopher quality -> C4 line/doc rules (terminal-punctuation rule off, as
FineWeb) -> FineWeb rules -> harmful content -> exact dedup -> MinHash near-dedup -> PII redaction (after
dedup, as FineWeb).
Every step is a ``cleaning_step`` plugin with datatrove's thresholds as its typed defaults; the recipe sets
three options where datatrove's code drops good articles (see heuristics.py), and passes articles read from
HTML / WARC pages past ``boilerplate`` (trafilatura already removed their chrome; see boilerplate.py).

Why our own runner rather than datatrove's executor: the per-document rules are cheap once words are
split with a regex, so the overhead of a general pipeline framework dominates; here documents go to a
process pool in batches and come back in order, and deduplicating steps compute their signatures in the
workers but decide in the main process, in document order. So the output is byte-identical for any
number of workers. Memory stays bounded: records stream in, at most ``2 x workers`` batches are in
flight, and kept records are written in parquet shards of ``shard_docs``. At cluster scale the same
steps run inside datatrove's executors (``engines.py``).

The report (``report.json``) gives docs and chars in -> out per step, seconds per step, removals by
``step:reason`` with a few examples each, and every bad input record (file:line) under the
``on_bad_input`` policy (``skip``: counted and reported; ``fail``: the run stops with that line).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge import Cleaner, Drop
from lmforge.errors import ConfigError, DataError
from lmforge.params import at_least, one_of
from lmforge.plugins.cleaners.basic import build_steps, check_steps, edit_steps
from lmforge.plugins.cleaners.web import is_extracted, worker_context
from lmforge.plugins.cleaners.writers import AuditWriter, ShardWriter, document_id
from lmforge.plugins.lib.data import BadRecord, iter_rows, write_dataset_card
from lmforge.plugins.lib.executors import EXECUTORS, ExecutorChoice, RayConfig, SlurmConfig, check_executor

STANDARD_STEPS = [
    "normalize",
    "boilerplate",
    "language",
    "gopher_repetition",
    {"name": "gopher_quality", "alpha_ratio_skip_punctuation": True},
    {"name": "c4_quality", "filter_no_terminal_punct": False, "min_num_sentences": 3},
    {"name": "fineweb_quality", "look_through_closing_marks": True, "char_duplicates_ratio": 0.1},
    "harmful",
    "exact_dedup",
    "minhash_dedup",
    "pii",
]


AUTO_POOL_BYTES = 32 << 20  # below this, worker start-up costs more than it saves


def auto_workers(source) -> int:
    """``workers: 0``: every core for a large input; this process alone for a small one (the bundled data, tests).

    Small inputs clean in seconds in-process, and staying in-process avoids forking a process that other
    threads (torch, tokenizers, a process group) run in. Inputs of unknown size (Hub, saved datasets) get every core.
    """
    from lmforge.sources import resolve_data

    cores = os.cpu_count() or 1
    try:
        parts = resolve_data(source).parts
    except Exception:  # noqa: BLE001 - the reader reports a bad input itself, with its own message
        return cores
    if any(part.kind != "files" for part in parts):
        return cores
    size = sum(f.stat().st_size for part in parts for f in part.files if f.is_file())
    return cores if size > AUTO_POOL_BYTES else 1


@dataclass
class StandardCleanerConfig:
    steps: list[Any] = field(default_factory=lambda: list(STANDARD_STEPS))
    text_field: str = "text"
    txt_mode: str = "file"  # .txt inputs: file | line | paragraph (blank-line separated)
    on_bad_input: str = "skip"  # skip (count + report file:line) | fail (stop at the first bad record)
    workers: int = 0  # processes; 0 = every core for inputs over 32 MB (smaller ones: this process), 1 = this process
    batch_size: int = 256  # documents per task sent to a worker
    shard_docs: int = 100_000  # kept documents per output parquet shard
    examples_per_reason: int = 3
    example_chars: int = 400
    keep_source: bool = False  # add a `source` column (file:line) to the output
    audit_docs: int = 100_000  # removed documents written to removed.jsonl (with text, step, reason) for review
    allow_list: str = ""  # a JSON file of document ids a person marked "wrongly removed" (lmforge audit): kept
    allowed_ids: list[str] = field(default_factory=list)  # filled from allow_list, so the fingerprint follows it
    add: list[Any] = field(default_factory=list)  # steps to put in without restating `steps` (basic.edit_steps)
    remove: list[str] = field(default_factory=list)  # step names to take out of `steps`
    executor: str = "in_process"  # in_process | local | ray | slurm (datatrove's executors, executors.py)
    tasks: int = 0  # executor tasks = input shards; 0 = one per core of this machine
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self):
        self.steps, self.add, self.remove = edit_steps(self.steps, self.add, self.remove), [], []
        one_of(self, "executor", EXECUTORS)
        one_of(self, "on_bad_input", ("skip", "fail"))
        at_least(self, 0, "tasks", "workers")

    def executor_choice(self) -> ExecutorChoice:
        """The executor the steps run on (``executors.py``), with the keys that name its options."""
        return ExecutorChoice(self.executor, self.workers, self.slurm, self.ray, key="cleaner.executor",
                              slurm_key="cleaner.slurm", job="clean")


def read_allow_list(path: str) -> list[str]:
    """The ids in an allow-list file written by ``lmforge audit`` (``{"ids": [...]}``)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"cleaner.allow_list: {file} not found (it is written by `lmforge audit`)")
    try:
        ids = json.loads(file.read_text())["ids"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cleaner.allow_list: {file} is not an allow-list ({{\"ids\": [...]}}): {exc}") from exc
    return sorted({str(i) for i in ids})


# ---- worker side: runs the steps over a batch of texts --------------------------------------------------
_WORKER_STEPS: list | None = None
_WORKER_ALLOWED: frozenset = frozenset()


def _init_worker(step_specs: list[Any], allowed=()) -> None:
    global _WORKER_STEPS, _WORKER_ALLOWED
    _WORKER_STEPS = build_steps(step_specs)
    _WORKER_ALLOWED = frozenset(allowed)


def _process_batch(texts: list[str], steps=None, allowed=None, extracted=None) -> tuple[list[tuple], list[float]]:
    """For each text: (final text or None, index of the dropping step, reason, lengths seen by each step,
    dedup signatures by step index, annotations, steps overruled by the allow-list). Also seconds spent
    per step over the batch. A document on the allow-list goes on past a step that would drop it.
    ``extracted[i]``: text ``i`` is an article the HTML reader extracted, which steps for text that still
    carries its page (``skip_extracted``, e.g. ``boilerplate``) pass through unchanged."""
    steps = steps if steps is not None else _WORKER_STEPS
    allowed = allowed if allowed is not None else _WORKER_ALLOWED
    seconds = [0.0] * len(steps)
    clock = time.perf_counter
    results = []
    extracted = extracted or [False] * len(texts)
    for text, from_html in zip(texts, extracted):
        lengths, signatures, annotations = [], {}, {}
        dropped_at, reason = -1, ""
        overruled: list[str] = []
        is_allowed = bool(allowed) and document_id(text) in allowed
        for index, step in enumerate(steps):
            lengths.append(len(text))
            if from_html and getattr(step, "skip_extracted", False):
                continue
            started = clock()
            if getattr(step, "deduplicates", False):
                signatures[index] = step.signature(text)
                seconds[index] += clock() - started
                continue
            result = step.process(text)
            seconds[index] += clock() - started
            if result is None or isinstance(result, Drop):
                why = result.reason if result is not None else "dropped"
                if is_allowed:
                    overruled.append(f"{getattr(step, 'name', '') or type(step).__name__}:{why}")
                    continue
                dropped_at, reason = index, why
                break
            if isinstance(result, tuple):
                result, extra = result
                annotations.update(extra)
            text = result
        else:
            lengths.append(len(text))
        if len(lengths) < len(steps) + 1 and dropped_at < 0:
            lengths += [len(text)] * (len(steps) + 1 - len(lengths))
        results.append((None if dropped_at >= 0 else text, dropped_at, reason, lengths, signatures, annotations,
                        overruled, is_allowed))
    return results, seconds


# ---- main side ------------------------------------------------------------------------------------------
class StandardCleaner(Cleaner):
    """Full cleaning recipe over any input kind, parallel and deterministic, with an audit report."""

    config_class = StandardCleanerConfig

    def __init__(self, config=None, **params):
        super().__init__(config, **params)
        if self.config.allow_list:  # the ids become part of the config, so the run's fingerprint follows them
            self.config.allowed_ids = read_allow_list(self.config.allow_list)

    def preflight(self, context):
        check_steps(self.config.steps)
        if self.config.executor != "in_process":
            check_executor(self.config.executor_choice())

    def run(self, inputs, output_dir, context):
        if self.config.executor != "in_process":
            from lmforge.plugins.cleaners.executors import run_on_executor  # datatrove: an optional extra

            return run_on_executor(self, inputs["text"], Path(output_dir), context, _process_batch,
                                   read_workers=self.config.workers or auto_workers(inputs["text"]))
        return self.clean(inputs["text"], Path(output_dir), context)

    def clean(self, source, output_dir: Path, context, computed=None, seconds=None) -> Path:
        """Clean ``source`` into ``output_dir``. ``computed``: the per-document results (of
        ``_process_batch``) already worked out elsewhere (the executor's map tasks), one per record in
        input order, with the ``seconds`` they took per step; then only the dedup decisions run here."""
        cfg = self.config
        steps = build_steps(cfg.steps)  # the main copy holds dedup state (and validates the config)
        names = [getattr(s, "name", "") or type(s).__name__ for s in steps]
        workers = 1 if computed is not None else cfg.workers or auto_workers(source)
        stats = CleaningStats(names, cfg.examples_per_reason, cfg.example_chars)
        writer = ShardWriter(Path(output_dir), cfg.shard_docs)
        started = time.perf_counter()

        audit = AuditWriter(Path(output_dir) / "removed.jsonl", cfg.audit_docs)
        flag_fields = {name: step.flag_field for name, step in zip(names, steps) if getattr(step, "flag_field", None)}

        def decide(batch, results):
            for record, result in zip(batch, results):
                text, dropped_at, reason, lengths, signatures, extra_fields, overruled, is_allowed = result
                for index in sorted(signatures):
                    if (dropped_at < 0 or index < dropped_at) and steps[index].seen_before(signatures[index]):
                        if is_allowed:
                            overruled.append(f"{names[index]}:{steps[index].drop_reason}")
                            continue
                        text, dropped_at, reason = None, index, steps[index].drop_reason
                        lengths = lengths[:index + 1]
                        break
                original = record.fields[cfg.text_field]
                stats.add(lengths, dropped_at, reason, original)
                if overruled:
                    stats.add_allowed(overruled)
                stats.flagged.update(name for name, column in flag_fields.items() if extra_fields.get(column))
                if dropped_at >= 0:
                    audit.add(record.where, original, names[dropped_at], reason)
                if text is not None:
                    fields = {**record.fields, cfg.text_field: text, **extra_fields}
                    if cfg.keep_source:
                        fields["source"] = record.where
                    writer.add(fields)

        progress = _progress(context)
        if seconds is not None:
            stats.add_seconds(seconds)
        try:
            for batch, results, batch_seconds in self._batches(source, steps, workers, stats, progress, computed):
                stats.add_seconds(batch_seconds)
                decide(batch, results)
        except BaseException:
            audit.discard()
            raise
        if progress is not None:
            progress.close()
        if stats.docs_in == 0:
            audit.discard()
            detail = f" ({stats.bad_total} bad records, e.g. {stats.bad[0]})" if stats.bad else ""
            raise DataError(f"{source}: no documents in the input{detail}")
        if writer.rows_written + len(writer.buffer) == 0:
            audit.discard()
            raise DataError(f"{source}: every document was removed ({dict(stats.removed)}); "
                            "loosen the steps")
        writer.close()
        audit.close()
        elapsed = time.perf_counter() - started
        report = stats.report(elapsed, workers, writer.files)
        (Path(output_dir) / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
        write_dataset_card(output_dir, "Cleaned text")
        if context is not None:
            self.log_report(context, report)
        return output_dir

    @staticmethod
    def log_report(context, report: dict[str, Any]) -> None:
        """The run's metrics of a cleaning report (in-process, or merged from an executor's tasks)."""
        skipped = {"bad_records": report["bad_records"]} if report.get("bad_records") else {}  # file:line in report.json
        context.log_metrics({"docs_in": report["docs_in"], "docs_out": report["docs_out"],
                             "chars_out": report["chars_out"], "mb_per_s": report["mb_per_s"], **skipped})

    def _batches(self, source, steps, workers, stats, progress, computed=None):
        """(records, results, seconds) per batch, in input order, computed in a bounded process pool (or
        taken from ``computed``)."""
        cfg = self.config

        def record_batches():
            batch = []
            for item in iter_rows(source, cfg.text_field, cfg.txt_mode, workers=workers):
                if isinstance(item, BadRecord):
                    if cfg.on_bad_input == "fail":
                        raise DataError(f"{item.where}: {item.problem}")
                    stats.add_bad(item)
                    continue
                batch.append(item)
                if len(batch) >= cfg.batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch

        if computed is not None:
            zero = [0.0] * len(steps)
            for batch in record_batches():
                results = [next(computed) for _ in batch]
                if progress is not None:
                    progress.update(len(batch))
                yield batch, results, zero
            return
        if workers <= 1:
            for batch in record_batches():
                results, seconds = _process_batch([r.fields[cfg.text_field] for r in batch], steps,
                                                  frozenset(cfg.allowed_ids), [is_extracted(r.origin) for r in batch])
                if progress is not None:
                    progress.update(len(batch))
                yield batch, results, seconds
            return
        pool = worker_context().Pool(workers, _init_worker, (cfg.steps, cfg.allowed_ids))
        try:
            pending: deque = deque()
            for batch in record_batches():
                texts = [r.fields[cfg.text_field] for r in batch]
                extracted = [is_extracted(r.origin) for r in batch]
                pending.append((batch, pool.apply_async(_process_batch, (texts, None, None, extracted))))
                while len(pending) > 2 * workers:
                    yield self._collect(pending.popleft(), progress)
            while pending:
                yield self._collect(pending.popleft(), progress)
        finally:
            pool.terminate()
            pool.join()

    @staticmethod
    def _collect(item, progress):
        batch, future = item
        results, seconds = future.get()
        if progress is not None:
            progress.update(len(batch))
        return batch, results, seconds


def _progress(context):
    if context is None or getattr(context, "quiet", False):
        return None
    from tqdm.auto import tqdm

    return tqdm(desc="cleaning", unit="doc")


class CleaningStats:
    """Counts per step (docs/chars in and out, seconds), removals by reason with examples, bad records."""

    def __init__(self, names: list[str], examples_per_reason: int, example_chars: int):
        self.names = names
        self.docs_in_step = [0] * len(names)
        self.chars_in_step = [0] * len(names)
        self.docs_out_step = [0] * len(names)
        self.chars_out_step = [0] * len(names)
        self.seconds = [0.0] * len(names)
        self.removed: Counter = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)
        self.examples_per_reason = examples_per_reason
        self.example_chars = example_chars
        self.docs_in = self.chars_in = self.docs_out = self.chars_out = 0
        self.bad: list[str] = []
        self.bad_total = 0
        self.allowed: Counter = Counter()  # step:reason -> documents kept because a person allowed them
        self.allowed_docs = 0
        self.flagged: Counter = Counter()  # step -> documents it kept but marked (a flag_field, e.g. decontaminate)

    def add_allowed(self, overruled: list[str]) -> None:
        self.allowed_docs += 1
        self.allowed.update(overruled)

    def add(self, lengths: list[int], dropped_at: int, reason: str, original: str) -> None:
        self.docs_in += 1
        self.chars_in += len(original)
        last = dropped_at if dropped_at >= 0 else len(self.names) - 1
        for index in range(last + 1):
            self.docs_in_step[index] += 1
            self.chars_in_step[index] += lengths[index]
            if index != dropped_at:
                self.docs_out_step[index] += 1
                self.chars_out_step[index] += lengths[index + 1]
        if dropped_at >= 0:
            key = f"{self.names[dropped_at]}:{reason}"
            self.removed[key] += 1
            if len(self.examples[key]) < self.examples_per_reason:
                self.examples[key].append(original[:self.example_chars])
        else:
            self.docs_out += 1
            self.chars_out += lengths[-1]

    def add_seconds(self, seconds: list[float]) -> None:
        self.seconds = [a + b for a, b in zip(self.seconds, seconds)]

    def add_bad(self, item: BadRecord) -> None:
        self.bad_total += 1
        if len(self.bad) < 100:
            self.bad.append(f"{item.where}: {item.problem}")

    def report(self, elapsed: float, workers: int, files: list[str]) -> dict[str, Any]:
        return {
            "docs_in": self.docs_in, "docs_out": self.docs_out,
            "chars_in": self.chars_in, "chars_out": self.chars_out,
            "seconds": round(elapsed, 3), "workers": workers,
            "mb_per_s": round(self.chars_in / 1e6 / max(elapsed, 1e-9), 3),
            "per_step": [
                {"step": name, "docs_in": self.docs_in_step[i], "docs_out": self.docs_out_step[i],
                 "chars_in": self.chars_in_step[i], "chars_out": self.chars_out_step[i],
                 "cpu_seconds": round(self.seconds[i], 3)}
                for i, name in enumerate(self.names)
            ],
            "removed": dict(sorted(self.removed.items(), key=lambda kv: -kv[1])),
            "flagged": dict(self.flagged),
            "examples": dict(self.examples),
            "bad_records": self.bad_total, "bad_record_lines": self.bad,
            "kept_by_allow_list": self.allowed_docs, "allow_list_overruled": dict(self.allowed),
            "files": files,
        }
