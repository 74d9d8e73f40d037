"""Pretraining tokenisation benchmark: lmforge's token shards against ``datasets.map(num_proc=…)``.

One corpus (JSON lines of real documents — Wikipedia, C4, Tiny Shakespeare from ../shared/data — repeated
to the size asked), one byte-level BPE tokenizer (lmforge's ``bpe`` stage, vocabulary 8192), and for each
size and worker count:

- lmforge: ``token_shards.build_shards`` (what the pretrainers call on a cache miss): reads the JSON lines
  streamed, tokenises shards in ``workers`` processes, writes flat uint16 shards + index.json;
- peer: the usual Hugging Face recipe, ``load_dataset("json")`` then ``.map(tokenizer, batched=True,
  num_proc=workers)`` with the same tokenizer (``AutoTokenizer``, no attention mask: token ids only, as lmforge
  writes), into a fresh datasets cache.

The same conditions for both: each run is a fresh process whose imports and tokenizer loading happen before
the clock starts; ``TOKENIZERS_PARALLELISM=false`` for both tools at every worker count (lmforge's workers
set it themselves: one process per core, no nested thread pools); the clock stops when the tool has written
its tokens to disk, and the token count check (both tools must produce the same number of tokens) comes
after it. Every (tool, workers) pair runs once per round, the order rotated each round, for ``--rounds``
rounds; medians are compared.

It prints tokens, seconds, tokens/s, the speed-up of all cores over one worker, "cores busy" (CPU seconds of
the process and its workers over wall seconds: how many cores the tool kept working), and the peak memory
of the whole process tree (main + workers, sampled every 100 ms) as PSS, so pages a forked worker shares with
its parent count once. The raw result (every run, the machine, its load, the versions) goes to
benchmarks/results/tokenize_<date>.json.

    python benchmarks/bench_tokenize.py                 # 10 MB, 3 rounds
    python benchmarks/bench_tokenize.py --sizes 50,500  # and 500 MB (needs ~2.5 GB of free disk)
    python benchmarks/bench_tokenize.py --sizes 20 --tools lmforge
    python benchmarks/bench_tokenize.py --sizes 50 --rounds 5
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

from _results import Recorder, median

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
from pathlib import Path
from transformers import AutoTokenizer
if tool == "lmforge":
    from lmforge.plugins.pretrainers.token_shards import build_shards
else:
    from datasets import load_dataset
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
def cpu():  # this process and its finished children (the pool's workers), user + system
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
cpu_started = cpu()
started = time.perf_counter()
if tool == "lmforge":  # token ids into flat uint16 shards on disk
    index = build_shards(Path(corpus), tokenizer, "text", Path(scratch) / "shards", workers=workers)
else:  # token ids into the datasets cache (arrow files on disk); no attention mask, as lmforge writes none
    data = load_dataset("json", data_files=corpus, split="train", cache_dir=scratch)
    tokenized = data.map(lambda b: tokenizer(b["text"], add_special_tokens=False, return_attention_mask=False),
                         batched=True, num_proc=workers if workers > 1 else None, remove_columns=["text"])
seconds, cpu_seconds = time.perf_counter() - started, cpu() - cpu_started
if tool == "lmforge":  # the check that both made the same tokens, outside the timing
    tokens = index["tokens"] - (index["documents"] - 1)  # without the eos between documents
else:
    import pyarrow.compute as pc
    tokens = int(pc.sum(pc.list_value_length(tokenized.data.column("input_ids"))).as_py())
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "tokens": tokens}))
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
    # the same for both tools and every worker count: lmforge's workers run the tokenizer single-threaded (one
    # process per core already), so datasets' do too
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
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
    parser.add_argument("--sizes", default="10", help="corpus sizes in MB, comma separated (e.g. 50,500)")
    parser.add_argument("--workers", type=int, default=None, help="all-cores worker count (default: every core)")
    parser.add_argument("--tools", default="lmforge,datasets", help="lmforge and/or datasets")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--rounds", "--repeat", type=int, default=3,
                        help="rounds: every (tool, workers) run once per round, the order rotated; medians compared")
    parser.add_argument("--out", type=Path, help="raw result file (default: benchmarks/results/tokenize_<date>.json)")
    args = parser.parse_args()
    from lmforge.plugins.pretrainers.token_shards import default_workers

    recorder = Recorder("tokenize", packages=("lmforge", "tokenizers", "transformers", "datasets", "pyarrow"))
    many = args.workers or default_workers()
    tools = args.tools.split(",")
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-tokenize-"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = work / "tokenizer"
    if not tokenizer_dir.is_dir():
        make_tokenizer(tokenizer_dir)
    print(f"cores: {many}, load average at start: {os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds")
    print(f"{'size':>6} {'tool':>9} {'workers':>7} {'tokens':>12} {'seconds':>8} {'Mtok/s':>7} {'x 1 worker':>10} "
          f"{'cores busy':>10} {'peak PSS MB':>11}")
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        corpus = work / f"corpus_{size}mb.jsonl"
        if not corpus.is_file():
            write_corpus(corpus, size)
        runs = {(tool, workers): [] for tool in tools for workers in (1, many)}
        contenders = list(runs)
        for round_index in range(args.rounds):  # a slow spell of the machine hits every (tool, workers) alike
            shift = round_index % len(contenders)
            for key in contenders[shift:] + contenders[:shift]:
                runs[key].append(measure(key[0], corpus, tokenizer_dir, key[1]))
        rows = {}
        for (tool, workers), measured in runs.items():
            seconds = median(r["seconds"] for r in measured)
            row = {"workers": workers, "tokens": measured[0]["tokens"], "seconds": [round(r["seconds"], 3) for r in measured],
                   "cpu_seconds": [round(r["cpu_seconds"], 3) for r in measured],
                   "peak_pss_mb": [round(r["peak_rss_mb"]) for r in measured], "median_s": round(seconds, 3),
                   "median_tokens_per_s": round(measured[0]["tokens"] / seconds),
                   "median_cores_busy": round(median(r["cpu_seconds"] / r["seconds"] for r in measured), 2)}
            rows[f"{tool}_{workers}w"] = row
            single = rows.get(f"{tool}_1w", row)
            row["speedup_over_1_worker"] = round(single["median_s"] / seconds, 2)
            print(f"{size:>4}MB {tool:>9} {workers:>7} {row['tokens']:>12,} {seconds:>8.1f} "
                  f"{row['median_tokens_per_s'] / 1e6:>7.2f} {row['speedup_over_1_worker']:>9.2f}x "
                  f"{row['median_cores_busy']:>10.2f} {max(row['peak_pss_mb']):>11.0f}", flush=True)
        counts = {key: row["tokens"] for key, row in rows.items()}
        if len(set(counts.values())) > 1:
            print(f"  token counts differ: {counts}")
        if {"lmforge", "datasets"} <= set(tools):
            for workers in (1, many):
                ratio = rows[f"datasets_{workers}w"]["median_s"] / rows[f"lmforge_{workers}w"]["median_s"]
                rows[f"lmforge_vs_datasets_{workers}w"] = round(ratio, 2)
                print(f"  {workers} worker(s): lmforge {ratio:.2f}x the tokens/s of datasets.map (medians)")
        rows["same_token_counts"] = len(set(counts.values())) == 1
        results[f"{size}MB"] = rows
        corpus.unlink()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    recorder.write({"sizes_mb": args.sizes, "workers": many, "rounds": args.rounds, "tools": tools,
                    "tokenizer": "lmforge bpe, vocab 8192", "TOKENIZERS_PARALLELISM": "false (both tools)"},
                   results, args.out)
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
