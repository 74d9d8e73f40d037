"""Cleaner benchmark: lmforge's rules vs datatrove's on the same documents, in interleaved rounds.

    python benchmarks/bench_cleaner.py [--copies 1] [--rounds 3] [--workers 2] [--limit N] [--datatrove-python PATH]

Input: real text from ../shared/data (C4 documents, Wikipedia articles, Tiny Shakespeare in 20-speech
documents), repeated ``--copies`` times with light edits so deduplication has near-duplicates to find.
datatrove runs in its own virtual environment (created on first use at ~/.cache/lmforge/datatrove-venv
with ``pip install "datatrove[processing,io]" spacy``) as a long-lived subprocess that imports datatrove,
builds its rules and warms spaCy up once, then runs one measured task at a time when asked; lmforge's
side does the same in this process. So imports, rule construction and warm-up are outside every timing.

The same work on both sides:
- each rule (Gopher quality, Gopher repetition, C4, FineWeb, PII) over every document in one process,
  each side producing a keep/drop decision (and the kept or redacted text) per document;
- MinHash signatures of every document: datatrove's shingles computed once per document, as its own
  ``MinhashDedupSignature.run`` does, then its signature; lmforge's ``minhash_dedup`` signature;
- the filter chain (Gopher repetition -> Gopher quality -> C4 without the end-mark rule -> FineWeb -> PII)
  end to end with ``--workers`` processes, JSON lines in, parquet out: lmforge's ``standard`` cleaner vs
  datatrove's ``LocalPipelineExecutor`` (``--workers`` tasks and workers, ``ParquetWriter``).

Every task runs once per round for each side, the side that goes first alternating, for ``--rounds``
rounds; the medians of wall-clock seconds are compared ("all rules, 1 process" is the median over rounds of
the per-round sum of the five rules), and, for the one-process tasks, CPU seconds beside them: on a shared
machine wall time swings with other jobs, CPU time much less. Keep/drop agreement and every disagreement class (our reason vs datatrove's) come
from the first round; MinHash signatures are compared band by band. The raw result (every round's seconds,
the machine, its load, the versions on both sides) goes to benchmarks/results/cleaner_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _results import Recorder, median

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
VENV = Path.home() / ".cache" / "lmforge" / "datatrove-venv"
RULES = ["gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality", "pii"]
CHAIN = ["gopher_repetition", "gopher_quality", {"name": "c4_quality", "filter_no_terminal_punct": False},
         "fineweb_quality", "pii"]

# The datatrove side: set up once, then one task per line read on stdin; each answer is one "@@" line.
DATATROVE_SIDE = r'''
import json, os, resource, shutil, sys, time
import importlib.metadata as metadata
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import ParquetWriter

corpus, work, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = [json.loads(line)["text"] for line in open(corpus)]
rules = {"gopher_quality": GopherQualityFilter(), "gopher_repetition": GopherRepetitionFilter(),
         "c4_quality": C4QualityFilter(), "fineweb_quality": FineWebQualityFilter(), "pii": PIIFormatter()}
for name, rule in rules.items():  # warm-up (spaCy's first call loads its tables)
    if name == "pii":
        rule.format("warm up the word tokenizer. " * 60)
    else:
        rule.filter(Document(text="warm up the word tokenizer. " * 60, id="w"))
signer = MinhashDedupSignature(output_folder=os.path.join(work, "sigs"), config=MinhashConfig())


def run_rule(name):
    rule, decisions = rules[name], []
    start = time.perf_counter()
    for i, text in enumerate(texts):
        if name == "pii":
            decisions.append(["keep", rule.format(text)])
            continue
        doc = Document(text=text, id=str(i))
        result = rule.filter(doc)
        keep = result if isinstance(result, bool) else result[0]
        decisions.append(["keep", doc.text] if keep else ["drop", result[1] if isinstance(result, tuple) else ""])
    return time.perf_counter() - start, decisions


def run_minhash():
    signatures = []
    start = time.perf_counter()
    for text in texts:  # as MinhashDedupSignature.run: shingles once, a signature when there are any
        shingles = signer.get_shingles(text)
        signatures.append(signer.get_signature(shingles) if shingles.size != 0 else None)
    return time.perf_counter() - start, signatures


def run_chain(round_index):
    out = os.path.join(work, f"dt_out_{round_index}")
    pipeline = [JsonlReader(os.path.join(work, "shards")), GopherRepetitionFilter(), GopherQualityFilter(),
                C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter(), PIIFormatter(),
                ParquetWriter(out)]
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=workers, workers=workers,
                                     logging_dir=os.path.join(work, f"dt_logs_{round_index}"), skip_completed=False)
    start = time.perf_counter()
    executor.run()
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return seconds, None


def cpu():  # this process and its finished children (a pool's workers), user + system
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


found = {}
for package in ("datatrove", "spacy", "numpy", "xxhash", "pyarrow"):
    try:
        found[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
        found[package] = None
print("@@ready " + json.dumps(found), flush=True)
for line in sys.stdin:
    task, round_index = line.split()
    cpu_started = cpu()
    if task == "minhash_signature":
        seconds, output = run_minhash()
    elif task == "chain":
        seconds, output = run_chain(round_index)
    else:
        seconds, output = run_rule(task)
    if round_index == "0" and output is not None:
        with open(os.path.join(work, f"datatrove_{task}.json"), "w") as handle:
            json.dump(output, handle)
    print(f"@@done {seconds} {cpu() - cpu_started}", flush=True)
'''


class Datatrove:
    """The datatrove side as a subprocess: ``run(task, round)`` -> seconds (and its output, first round)."""

    def __init__(self, python: str, corpus: Path, work: Path, workers: int):
        self.work = work
        self.log = open(work / "datatrove.log", "w")  # noqa: SIM115 (open for the subprocess's life)
        self.proc = subprocess.Popen([python, "-u", "-c", DATATROVE_SIDE, str(corpus), str(work), str(workers)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.versions = json.loads(self._answer("@@ready "))

    def _answer(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        self.log.flush()
        sys.exit("datatrove side failed:\n" + "\n".join((self.work / "datatrove.log").read_text().splitlines()[-15:]))

    def run(self, task: str, round_index: int) -> tuple[float, float]:
        self.proc.stdin.write(f"{task} {round_index}\n")
        self.proc.stdin.flush()
        wall, cpu_seconds = self._answer("@@done ").split()
        return float(wall), float(cpu_seconds)

    def output(self, task: str):
        return json.loads((self.work / f"datatrove_{task}.json").read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
        self.log.close()


class Lmforge:
    """lmforge's side in this process: the steps built and warmed up once."""

    def __init__(self, texts: list[str], corpus: Path, work: Path, workers: int):
        from lmforge import RunContext
        from lmforge.plugins.cleaners.basic import build_steps
        from lmforge.plugins.cleaners.standard import StandardCleaner

        self.texts, self.corpus, self.work, self.workers = texts, corpus, work, workers
        self.steps = dict(zip(RULES, build_steps(RULES)))
        (self.minhash,) = build_steps(["minhash_dedup"])
        self.context, self.cleaner_class = RunContext(quiet=True), StandardCleaner
        for step in self.steps.values():  # the same warm-up text as datatrove's
            step.process("warm up the word tokenizer. " * 60)
        self.minhash.signature("warm up the word tokenizer. " * 60)
        self.outputs: dict[str, list] = {}

    def run_rule(self, name: str) -> tuple[float, list]:
        step, decisions = self.steps[name], []
        start = time.perf_counter()
        for text in self.texts:
            result = step.process(text)
            if isinstance(result, tuple):
                result = result[0]
            decisions.append(["keep", result] if isinstance(result, str) else ["drop", result.reason])
        return time.perf_counter() - start, decisions

    def run_minhash(self) -> tuple[float, list]:
        start = time.perf_counter()
        signatures = [self.minhash.signature(t) for t in self.texts]
        return time.perf_counter() - start, signatures

    def run_chain(self, round_index: int) -> tuple[float, None]:
        out = self.work / f"lm_out_{round_index}"
        out.mkdir()
        cleaner = self.cleaner_class(steps=CHAIN, workers=self.workers)
        start = time.perf_counter()
        cleaner.run({"text": str(self.corpus)}, out, self.context)
        seconds = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
        return seconds, None

    def run(self, task: str, round_index: int) -> tuple[float, float]:
        cpu_started = cpu()
        if task == "minhash_signature":
            seconds, output = self.run_minhash()
        elif task == "chain":
            seconds, output = self.run_chain(round_index)
        else:
            seconds, output = self.run_rule(task)
        if round_index == 0 and output is not None:
            self.outputs[task] = output
        return seconds, cpu() - cpu_started


def cpu() -> float:
    """CPU seconds of this process and its finished children (a pool's workers), user + system."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def datatrove_python(given: str | None) -> str:
    if given:
        return given
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} with datatrove[processing] + spacy (one time)…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "datatrove[processing,io]", "spacy"], check=True)
    return str(python)


def build_corpus(copies: int, seed: int = 0) -> list[str]:
    """Real documents: C4, Wikipedia, Shakespeare; then edited copies (near-duplicates)."""
    with open(SHARED / "c4_demo.jsonl") as c4, open(SHARED / "wiki_demo.txt") as wiki:
        docs = [json.loads(line)["text"] for line in c4]
        docs += [line.strip() for line in wiki if line.strip()]
    speeches = (SHARED / "tinyshakespeare.txt").read_text().split("\n\n")
    docs += ["\n\n".join(speeches[i:i + 20]) for i in range(0, len(speeches), 20)]
    rng = random.Random(seed)
    corpus = list(docs)
    for _ in range(copies - 1):
        for doc in docs:
            words = doc.split(" ")
            for _ in range(max(1, len(words) // 50)):  # ~2% of words changed: Jaccard ~0.9
                words[rng.randrange(len(words))] = rng.choice(["data", "model", "text", "the"])
            corpus.append(" ".join(words))
    return corpus


def band_hashes(bands) -> tuple | None:
    """datatrove's per-band hash lists -> our per-band 128-bit keys, to compare signatures exactly."""
    import numpy as np
    import xxhash

    if bands is None:
        return None
    return tuple(xxhash.xxh3_128_intdigest(np.asarray(b, dtype=np.uint64).tobytes(), seed=i)
                 for i, b in enumerate(bands))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--datatrove-python")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N documents (quick check)")
    parser.add_argument("--no-chain", action="store_true", help="leave the 2-process filter chain out")
    parser.add_argument("--out", type=Path, help="raw result file (default: benchmarks/results/cleaner_<date>.json)")
    args = parser.parse_args()
    python = datatrove_python(args.datatrove_python)
    texts = build_corpus(args.copies)[:args.limit or None]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    work = Path(tempfile.mkdtemp(prefix="bench_cleaner_"))
    corpus = work / "corpus.jsonl"
    with open(corpus, "w") as handle:
        handle.writelines(json.dumps({"text": text}) + "\n" for text in texts)
    (work / "shards").mkdir()
    for shard in range(args.workers):  # one shard per datatrove task
        with open(work / "shards" / f"part-{shard}.jsonl", "w") as handle:
            handle.writelines(json.dumps({"text": text}) + "\n" for text in texts[shard::args.workers])
    recorder = Recorder("cleaner", packages=("lmforge", "numpy", "xxhash", "pyarrow"))
    print(f"corpus: {len(texts)} documents, {megabytes:.2f} MB; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds", flush=True)

    theirs = Datatrove(python, corpus, work, args.workers)
    ours = Lmforge(texts, corpus, work, args.workers)
    recorder.extra_versions = {f"datatrove-venv {k}": v for k, v in theirs.versions.items()}
    tasks = [*RULES, "minhash_signature"] + ([] if args.no_chain else ["chain"])
    seconds: dict[str, dict[str, list[float]]] = {task: {"lmforge": [], "datatrove": []} for task in tasks}
    cpu_seconds: dict[str, dict[str, list[float]]] = {task: {"lmforge": [], "datatrove": []} for task in tasks}
    for round_index in range(args.rounds):
        for task_index, task in enumerate(tasks):
            sides = [("lmforge", ours), ("datatrove", theirs)]
            if (round_index + task_index) % 2:
                sides.reverse()  # each side goes first in half the turns
            for label, side in sides:
                wall, used = side.run(task, round_index)
                seconds[task][label].append(wall)
                cpu_seconds[task][label].append(used)
            print(f"round {round_index + 1}/{args.rounds} {task:18s} lmforge {seconds[task]['lmforge'][-1]:7.2f} s  "
                  f"datatrove {seconds[task]['datatrove'][-1]:7.2f} s", flush=True)
    theirs_out = {task: theirs.output(task) for task in [*RULES, "minhash_signature"]}
    theirs.close()

    results: dict[str, dict] = {}

    def summary(task: str, wall: dict[str, list[float]], used: dict[str, list[float]], **extra) -> dict:
        a, b = median(wall["lmforge"]), median(wall["datatrove"])
        a_cpu, b_cpu = median(used["lmforge"]), median(used["datatrove"])
        results[task] = {"lmforge_seconds": [round(x, 4) for x in wall["lmforge"]],
                         "datatrove_seconds": [round(x, 4) for x in wall["datatrove"]],
                         "lmforge_cpu_seconds": [round(x, 4) for x in used["lmforge"]],
                         "datatrove_cpu_seconds": [round(x, 4) for x in used["datatrove"]],
                         "ratio_per_round": [round(y / x, 2) for x, y in zip(wall["lmforge"], wall["datatrove"])],
                         "lmforge_median_s": round(a, 4), "datatrove_median_s": round(b, 4),
                         "lmforge_mb_per_s": round(megabytes / a, 3), "datatrove_mb_per_s": round(megabytes / b, 3),
                         "ratio": round(b / a, 2), "cpu_ratio": round(b_cpu / a_cpu, 2), **extra}
        return results[task]

    print(f"\nmedians of {args.rounds} rounds\n{'task':24s} {'lmforge MB/s':>12s} {'datatrove MB/s':>15s} "
          f"{'ratio':>7s} {'CPU ratio':>9s} {'agreement':>10s}")
    classes: dict[str, Counter] = {}
    for name in RULES:
        a, b = ours.outputs[name], theirs_out[name]
        extra = {}
        if name == "pii":
            agreement = "n/a"  # placeholders differ by design (ours name the kind): throughput only
        else:
            same = sum(1 for x, y in zip(a, b) if x[0] == y[0])
            agreement = f"{same / len(texts):.2%}"
            classes[name] = Counter(f"lmforge {x[0]}:{x[1] if x[0] == 'drop' else ''} vs datatrove "
                                    f"{y[0]}:{y[1] if y[0] == 'drop' else ''}" for x, y in zip(a, b) if x[0] != y[0])
            extra = {"agreement": round(same / len(texts), 4), "agree": same,
                     "disagreements": dict(classes[name].most_common())}
        row = summary(name, seconds[name], cpu_seconds[name], **extra)
        print(f"{name:24s} {row['lmforge_mb_per_s']:12.2f} {row['datatrove_mb_per_s']:15.2f} {row['ratio']:6.1f}x "
              f"{row['cpu_ratio']:8.1f}x {agreement:>10s}")
    a, b = ours.outputs["minhash_signature"], theirs_out["minhash_signature"]
    equal = sum(1 for x, y in zip(a, b) if tuple(x or ()) == tuple(band_hashes(y) or ()))
    row = summary("minhash_signature", seconds["minhash_signature"], cpu_seconds["minhash_signature"],
                  identical_band_hashes=round(equal / len(texts), 4))
    print(f"{'minhash signature':24s} {row['lmforge_mb_per_s']:12.2f} {row['datatrove_mb_per_s']:15.2f} "
          f"{row['ratio']:6.1f}x {row['cpu_ratio']:8.1f}x {equal / len(texts):>10.2%}  (identical band hashes)")
    filters = [r for r in RULES if r != "pii"]
    agree = sum(results[r]["agree"] for r in filters)
    row = summary("all_rules_1_process", *({side: [sum(table[r][side][i] for r in RULES) for i in range(args.rounds)]
                                            for side in ("lmforge", "datatrove")} for table in (seconds, cpu_seconds)),
                  agreement_over_4_filters=f"{agree}/{len(filters) * len(texts)}")
    print(f"{'all rules, 1 process':24s} {row['lmforge_mb_per_s']:12.2f} {row['datatrove_mb_per_s']:15.2f} "
          f"{row['ratio']:6.1f}x {row['cpu_ratio']:8.1f}x {agree / (len(filters) * len(texts)):>10.2%}  "
          "(over the 4 filters)")
    if "chain" in tasks:  # wall time only: the worker pools' CPU time does not reliably reach getrusage
        row = summary("chain", seconds["chain"], cpu_seconds["chain"], workers=args.workers)
        for key in ("lmforge_cpu_seconds", "datatrove_cpu_seconds", "cpu_ratio"):
            del row[key]
        print(f"{'filter chain, ' + str(args.workers) + ' procs':24s} {row['lmforge_mb_per_s']:12.2f} "
              f"{row['datatrove_mb_per_s']:15.2f} {row['ratio']:6.1f}x {'-':>8s}")
    for name, counter in classes.items():
        for label, count in counter.most_common(8):
            print(f"  disagreement {name}: {label}: {count}")
    recorder.write({"documents": len(texts), "megabytes": round(megabytes, 3), "copies": args.copies,
                    "rounds": args.rounds, "workers": args.workers, "limit": args.limit}, results, args.out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
