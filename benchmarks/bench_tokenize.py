"""Pretraining tokenisation benchmark: lmforge's token shards against ``datasets.map(num_proc=…)``.

One corpus (JSON lines of real documents — Wikipedia, C4, Tiny Shakespeare from ../shared/data — repeated
to the size asked), one byte-level BPE tokenizer (lmforge's ``bpe`` stage, vocabulary 8192), and for each
size and worker count:

- lmforge: ``token_shards.build_shards`` (what the pretrainers call on a cache miss): reads the JSON lines
  streamed, tokenises shards in ``workers`` processes, writes flat uint16 shards + index.json;
- peer: the usual Hugging Face recipe, ``load_dataset("json")`` then ``.map(tokenizer, batched=True,
  num_proc=workers)`` with the same tokenizer (``AutoTokenizer``), into a fresh datasets cache.

Each run is a fresh process; it prints tokens, seconds, tokens/s, the speed-up of all cores over one worker,
"cores busy" (CPU seconds of the process and its workers over wall seconds: how many cores the tool kept
working — on a shared machine whose speed drifts between runs this is the steadier measure of parallelism),
and the peak memory of the whole process tree (main + workers, sampled every 50 ms) as PSS, so pages a
forked worker shares with its parent count once. Both tools must produce
the same number of tokens (checked). The load average is printed too: on a shared machine compare only
numbers of the same run.

    python benchmarks/bench_tokenize.py                 # 50 MB
    python benchmarks/bench_tokenize.py --sizes 50,500  # and 500 MB (needs ~2.5 GB of free disk)
    python benchmarks/bench_tokenize.py --sizes 20 --tools lmforge
    python benchmarks/bench_tokenize.py --sizes 50 --repeat 5  # median of 5 interleaved runs each
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def documents() -> list[str]:
    docs = [line.strip() for line in (DATA / "wiki_demo.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    docs += [json.loads(line)["text"] for line in (DATA / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines()]
    shakespeare = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8").split("\n\n")
    docs += ["\n\n".join(shakespeare[i:i + 20]) for i in range(0, len(shakespeare), 20)]
    return docs


def write_corpus(path: Path, megabytes: int) -> None:
    lines = [json.dumps({"text": d}) + "\n" for d in documents()]
    target, written = megabytes * 1_000_000, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < target:
            for line in lines:
                out.write(line)
                written += len(line.encode("utf-8"))
                if written >= target:
                    break


def make_tokenizer(out: Path) -> None:
    import lmforge

    train = out.with_suffix(".train.txt")
    train.write_text("\n".join(documents()), encoding="utf-8")
    stage = lmforge.registry().get("tokenizer", "bpe")(vocab_size=8192)
    lmforge.run_stage(stage, {"text": train}, out, lmforge.RunContext(quiet=True))


# ---------------------------------------------------------------- one measured run (in its own process)

CHILD = r"""
import json, os, sys, time
tool, corpus, tokenizer_dir, workers, scratch = sys.argv[1:6]
workers = int(workers)
import resource
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
def cpu():  # this process and its finished children (the pool's workers), user + system
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
cpu_started = cpu()
started = time.perf_counter()
if tool == "lmforge":
    from pathlib import Path
    from lmforge.plugins.pretrainers.token_shards import build_shards
    index = build_shards(Path(corpus), tokenizer, "text", Path(scratch) / "shards", workers=workers)
    tokens = index["tokens"] - (index["documents"] - 1)  # without the eos between documents
else:
    os.environ["HF_DATASETS_CACHE"] = scratch
    from datasets import load_dataset
    data = load_dataset("json", data_files=corpus, split="train", cache_dir=scratch)
    tokenized = data.map(lambda b: tokenizer(b["text"], add_special_tokens=False), batched=True,
                         num_proc=workers if workers > 1 else None, remove_columns=["text"])
    tokens = sum(len(ids) for batch in tokenized.iter(batch_size=10_000) for ids in batch["input_ids"])
print(json.dumps({"seconds": time.perf_counter() - started, "cpu_seconds": cpu() - cpu_started, "tokens": tokens}))
"""


def _pss(pid: int) -> int:
    """A process's PSS in bytes from /proc/<pid>/smaps_rollup: one short read. (psutil's memory_full_info
    parses the whole smaps file; sampled every 50 ms for three processes it took a share of the two cores the
    workers were measured on, and the 2-worker figure with it.)"""
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(tool: str, corpus: Path, tokenizer_dir: Path, workers: int) -> dict:
    import psutil

    scratch = Path(tempfile.mkdtemp(prefix=f"bench-tokenize-{tool}-", dir=corpus.parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false" if workers == 1 else "true"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, tool, str(corpus), str(tokenizer_dir), str(workers),
                             str(scratch)], stdout=subprocess.PIPE, text=True, env=env)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:  # PSS: pages a forked worker shares with its parent count once, split between them
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(_pss(p.pid) for p in tree))
        except (psutil.Error, OSError):
            pass
        time.sleep(0.1)
    out = proc.stdout.read()
    shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"{tool} with {workers} workers failed")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "peak_rss_mb": peak / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50", help="corpus sizes in MB, comma separated (e.g. 50,500)")
    parser.add_argument("--workers", type=int, default=None, help="all-cores worker count (default: every core)")
    parser.add_argument("--tools", default="lmforge,datasets", help="lmforge and/or datasets")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per (tool, workers), interleaved; the median time is printed (a shared machine "
                             "varies by 20%% from one run to the next)")
    args = parser.parse_args()
    from lmforge.plugins.pretrainers.token_shards import default_workers

    many = args.workers or default_workers()
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-tokenize-"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = work / "tokenizer"
    if not tokenizer_dir.is_dir():
        make_tokenizer(tokenizer_dir)
    print(f"cores: {many}, load average at start: {os.getloadavg()[0]:.2f}")
    print(f"{'size':>6} {'tool':>9} {'workers':>7} {'tokens':>12} {'seconds':>8} {'Mtok/s':>7} {'x 1 worker':>10} "
          f"{'cores busy':>10} {'peak PSS MB':>11}")
    for size in (int(s) for s in args.sizes.split(",")):
        corpus = work / f"corpus_{size}mb.jsonl"
        if not corpus.is_file():
            write_corpus(corpus, size)
        counts = {}
        for tool in args.tools.split(","):
            single, runs = None, {1: [], many: []}
            for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits both counts
                for workers in runs:
                    runs[workers].append(measure(tool, corpus, tokenizer_dir, workers))
            for workers, results in runs.items():
                result = sorted(results, key=lambda r: r["seconds"])[len(results) // 2]
                result["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
                rate = result["tokens"] / result["seconds"]
                single = single or rate
                counts.setdefault(tool, result["tokens"])
                print(f"{size:>4}MB {tool:>9} {workers:>7} {result['tokens']:>12,} {result['seconds']:>8.1f} "
                      f"{rate / 1e6:>7.2f} {rate / single:>9.2f}x {result['cpu_seconds'] / result['seconds']:>10.2f} "
                      f"{result['peak_rss_mb']:>11.0f}", flush=True)
        if len(set(counts.values())) > 1:
            print(f"  token counts differ: {counts}")
        corpus.unlink()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
