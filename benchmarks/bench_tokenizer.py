"""Tokenizer stage benchmark: training throughput against HF ``tokenizers`` called directly, and compression.

1. Throughput: lmforge's byte-level BPE stage (``run_stage``: streaming, held-out split, training, saving, the
   report) against the same ``tokenizers`` pipeline called by hand on the same text (read, train, save).
   Ratio = lmforge seconds / direct seconds; goal <= 1.05. One run of each per round, the order alternating,
   for ``--rounds`` rounds; medians compared. Both in this process, imports done before the first round,
   ``TOKENIZERS_PARALLELISM=true`` for both.
2. Compression: bytes per token on held-out text for lmforge's bpe / unigram / wordpiece and, if the
   ``sentencepiece`` package is installed, sentencepiece BPE and Unigram models of the same vocabulary size
   trained on the same text (identity normalization, byte fallback; sentencepiece encodes line by line, so
   one token per line break is added to its count to match the newline tokens the others produce).

Data: the real text in ../shared/data (Wikipedia, C4, Tiny Shakespeare), split 95/5 into train/held-out
documents. Run: ``python benchmarks/bench_tokenizer.py [--vocab-size 2048] [--rounds 3] [--skip-unigram]``.
The raw result (every round, the machine, its load, the versions) goes to benchmarks/results/tokenizer_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from _results import Recorder, median

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_documents() -> list[str]:
    docs = [line.strip() for line in (DATA / "wiki_demo.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    docs += [json.loads(line)["text"] for line in (DATA / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines()]
    shakespeare = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    docs += [part.strip() + "\n" for part in shakespeare.split("\n\n") if part.strip()]
    return docs


def split(docs: list[str]) -> tuple[list[str], list[str]]:
    train, heldout = [], []
    for index, doc in enumerate(docs):
        (heldout if index % 20 == 19 else train).append(doc)
    return train, heldout


def direct_bpe(train_file: Path, out: Path, vocab_size: int) -> float:
    """The same byte-level BPE, built and trained with ``tokenizers`` alone: read, train, save."""
    from lmforge.plugins.tokenizers.bpe import GPT4_PATTERN
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    started = time.perf_counter()
    specials = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern=Regex(GPT4_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def batches():
        batch = []
        with open(train_file, encoding="utf-8") as handle:
            for line in handle:
                batch.append(json.loads(line)["text"])
                if len(batch) == 1000:
                    yield batch
                    batch = []
        if batch:
            yield batch

    tokenizer.train_from_iterator(batches(), trainer=trainer)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    return time.perf_counter() - started


def lmforge_stage(cls, train_file: Path, out: Path, vocab_size: int) -> tuple[float, dict]:
    import lmforge

    shutil.rmtree(out, ignore_errors=True)
    context = lmforge.RunContext(quiet=True)
    started = time.perf_counter()
    lmforge.run_stage(cls(vocab_size=vocab_size, heldout_fraction=0.0), {"text": train_file}, out, context)
    seconds = time.perf_counter() - started
    return seconds, json.loads((out / "tokenizer_report.json").read_text())


def bytes_per_token_hf(tokenizer_dir: Path, heldout: list[str]) -> float:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ids = tokenizer(heldout, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return sum(len(d.encode("utf-8")) for d in heldout) / sum(len(i) for i in ids)


def sentencepiece_rows(train: list[str], heldout: list[str], vocab_size: int, work: Path) -> list[tuple[str, float, float]]:
    try:
        import sentencepiece as spm
    except ImportError:
        print("sentencepiece not installed: skipping its rows (pip install 'sentencepiece>=0.2,<0.3')")
        return []
    lines_file = work / "train_lines.txt"
    lines_file.write_text("\n".join(line for doc in train for line in doc.split("\n") if line.strip()), encoding="utf-8")
    n_bytes = sum(len(d.encode("utf-8")) for d in heldout)
    rows = []
    for model_type in ("bpe", "unigram"):
        prefix = work / f"sp_{model_type}"
        started = time.perf_counter()
        spm.SentencePieceTrainer.train(
            input=str(lines_file), model_prefix=str(prefix), vocab_size=vocab_size, model_type=model_type,
            byte_fallback=True, normalization_rule_name="identity", character_coverage=0.9995,
            max_sentence_length=1 << 16, num_threads=2, minloglevel=2,
            user_defined_symbols=["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
            bos_piece="<|bos|>", eos_piece="<|eos|>", unk_piece="<|unk|>", pad_id=3, pad_piece="<|pad|>")
        seconds = time.perf_counter() - started
        processor = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
        tokens = 0
        for doc in heldout:
            lines = doc.split("\n")
            tokens += sum(len(ids) for ids in processor.encode(lines)) + len(lines) - 1
        rows.append((f"sentencepiece {model_type}", n_bytes / tokens, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--rounds", "--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="raw result file (default: benchmarks/results/tokenizer_<date>.json)")
    parser.add_argument("--skip-unigram", action="store_true", help="Unigram training is the slow one")
    args = parser.parse_args()

    from lmforge.plugins.tokenizers.bpe import ByteLevelBPE
    from lmforge.plugins.tokenizers.unigram import UnigramTokenizer
    from lmforge.plugins.tokenizers.wordpiece import WordPieceTokenizer

    recorder = Recorder("tokenizer", packages=("lmforge", "tokenizers", "transformers", "sentencepiece"))
    train, heldout = split(load_documents())
    work = Path(tempfile.mkdtemp(prefix="bench-tokenizer-"))
    train_file = work / "train.jsonl"
    train_file.write_text("".join(json.dumps({"text": d}) + "\n" for d in train), encoding="utf-8")
    train_mb = sum(len(d.encode("utf-8")) for d in train) / 1e6
    print(f"data: {len(train)} train docs ({train_mb:.2f} MB), {len(heldout)} held-out docs "
          f"({sum(len(d.encode()) for d in heldout) / 1e6:.2f} MB); vocab {args.vocab_size}; cpus {os.cpu_count()}")

    direct_bpe(train_file, work / "direct", args.vocab_size)  # warm-ups: imports and file cache, not measured
    lmforge_stage(ByteLevelBPE, train_file, work / "bpe", args.vocab_size)
    direct_times, stage_times, stage_train_times = [], [], []
    for round_index in range(args.rounds):
        def ours():
            seconds, report = lmforge_stage(ByteLevelBPE, train_file, work / "bpe", args.vocab_size)
            stage_times.append(seconds)
            stage_train_times.append(report["train_seconds"])

        def theirs():
            direct_times.append(direct_bpe(train_file, work / "direct", args.vocab_size))

        for run in (theirs, ours) if round_index % 2 == 0 else (ours, theirs):
            run()
        print(f"round {round_index + 1}/{args.rounds}: direct {direct_times[-1]:.2f} s, lmforge training "
              f"{stage_train_times[-1]:.2f} s, whole stage {stage_times[-1]:.2f} s", flush=True)
    direct, stage, stage_train = median(direct_times), median(stage_times), median(stage_train_times)
    print(f"\n## Training throughput, byte-level BPE (medians of {args.rounds} interleaved rounds)")
    print("| run | seconds | MB/s |\n|---|---|---|")
    print(f"| tokenizers directly (read + train + save) | {direct:.2f} | {train_mb / direct:.2f} |")
    print(f"| lmforge bpe, training only (stream + train) | {stage_train:.2f} | {train_mb / stage_train:.2f} |")
    print(f"| lmforge bpe, whole stage (+ save, report, manifest) | {stage:.2f} | {train_mb / stage:.2f} |")
    print(f"overhead ratio (training only / direct): {stage_train / direct:.3f}   (goal <= 1.05)")
    print(f"overhead ratio (whole stage / direct):   {stage / direct:.3f}")
    results = {"throughput": {
        "direct_seconds": [round(x, 3) for x in direct_times], "lmforge_train_seconds": [round(x, 3) for x in
                                                                                         stage_train_times],
        "lmforge_stage_seconds": [round(x, 3) for x in stage_times], "direct_median_s": round(direct, 3),
        "lmforge_train_median_s": round(stage_train, 3), "lmforge_stage_median_s": round(stage, 3),
        "overhead_ratio_training": round(stage_train / direct, 3), "overhead_ratio_whole_stage": round(stage / direct, 3)}}

    rows = [("lmforge bpe (byte-level, gpt4 regex)", bytes_per_token_hf(work / "bpe", heldout), stage_train)]
    seconds, report = lmforge_stage(WordPieceTokenizer, train_file, work / "wordpiece", args.vocab_size)
    rows.append(("lmforge wordpiece", bytes_per_token_hf(work / "wordpiece", heldout), report["train_seconds"]))
    if not args.skip_unigram:
        seconds, report = lmforge_stage(UnigramTokenizer, train_file, work / "unigram", args.vocab_size)
        rows.append(("lmforge unigram (byte fallback)", bytes_per_token_hf(work / "unigram", heldout),
                     report["train_seconds"]))
    rows += sentencepiece_rows(train, heldout, args.vocab_size, work)
    print(f"\n## Compression on held-out text (vocab {args.vocab_size}; higher bytes/token = fewer tokens)")
    print("| tokenizer | bytes/token | train seconds |\n|---|---|---|")
    for name, bpt, seconds in rows:
        print(f"| {name} | {bpt:.3f} | {seconds:.1f} |")
    results["compression"] = {name: {"heldout_bytes_per_token": round(bpt, 4), "train_seconds_one_run": round(seconds, 2)}
                              for name, bpt, seconds in rows}
    recorder.write({"vocab_size": args.vocab_size, "rounds": args.rounds, "train_docs": len(train),
                    "train_mb": round(train_mb, 3), "heldout_docs": len(heldout),
                    "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM")}, results, args.out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
