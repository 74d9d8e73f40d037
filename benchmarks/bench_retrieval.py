"""What retrieval when unsure buys a small model: accuracy with and without it, and how often it fires.

    python benchmarks/bench_retrieval.py [--steps 1500] [--hidden 128] [--layers 2]

1. Writes the context-QA set (plugins/retrieval/context_qa.py): invented places, their documents, SFT
   conversations answering from passages, held-out questions whose answers exist only in the documents, and
   "known" questions the model learns by heart.
2. Trains lmforge's BPE tokenizer on it and fine-tunes a randomly initialised tiny Llama with lmforge's SFT stage
   (reply-only loss) — the whole model learns the answer-from-context skill from this data alone.
3. Greedy answers on held-out questions: bare (no retrieval) vs retrieval always on (BM25 over documents/) vs
   retrieval when unsure (entropy threshold); firing rate on known vs held-out questions at that threshold.
The threshold is chosen on half of the questions (calibration) and the rates are reported on the other half.
No peer runs beside it (it measures what retrieval buys, not speed); the raw result (the settings, the
machine, the versions, every rate) goes to benchmarks/results/retrieval_<date>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _results import Recorder

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", default=None, help="keep the artifacts here (default: a temp dir)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--distractors", type=int, default=2, help="other places' passages beside the right one")
    parser.add_argument("--results", type=Path, help="raw result file (default: benchmarks/results/retrieval_<date>.json)")
    args = parser.parse_args(argv)
    recorder = Recorder("retrieval", packages=("lmforge", "torch", "transformers", "bm25s"))

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    import lmforge
    from lmforge.plugins.finetuners.sft import SFTFinetuner
    from lmforge.plugins.lib.generation import GenerateConfig, encode_prompt, eos_token_ids, sample
    from lmforge.plugins.pretrainers.hf_trainer import build_model_config
    from lmforge.plugins.retrieval.context_qa import answered, write_context_qa
    from lmforge.plugins.retrieval.when_unsure import (
        RetrievalConfig,
        build_retriever,
        sample_when_unsure,
        uncertainty_scores,
    )
    from lmforge.plugins.tokenizers.bpe import ByteLevelBPE
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    root = Path(args.out or tempfile.mkdtemp(prefix="bench_retrieval_"))
    counts = write_context_qa(root / "data", distractors=args.distractors)
    print(f"data: {counts}")
    hardware = lmforge.Hardware(device=args.device, precision="bf16" if args.device == "cuda" else "fp32")
    context = lmforge.RunContext(hardware=hardware, quiet=True)
    text_file = root / "text.jsonl"
    with open(text_file, "w") as handle:
        for line in (root / "data" / "sft.jsonl").read_text().splitlines():
            handle.writelines(json.dumps({"text": message["content"]}) + "\n" for message in json.loads(line)["messages"])
    tokenizer_dir, _ = lmforge.run_stage(ByteLevelBPE(vocab_size=2048), {"text": text_file}, root / "tokenizer",
                                         context)
    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model_cfg = {"model_type": "llama", "hidden_size": args.hidden, "intermediate_size": args.hidden * 3,
                 "num_hidden_layers": args.layers, "num_attention_heads": 4, "num_key_value_heads": 4,
                 "max_position_embeddings": 512, "tie_word_embeddings": True}
    base = root / "base"
    AutoModelForCausalLM.from_config(build_model_config(model_cfg, tokenizer)).save_pretrained(str(base))
    tokenizer.save_pretrained(str(base))
    started = time.perf_counter()
    sft_context = lmforge.RunContext(stage_name="finetuner", work_dir=root / "work", hardware=context.hardware,
                                     quiet=True)
    model_dir, manifest = lmforge.run_stage(
        SFTFinetuner(max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, max_length=160,
                     warmup_steps=50, save_steps=0, logging_steps=100),
        {"model": base, "data": root / "data" / "sft.jsonl"}, root / "sft", sft_context)
    sft_seconds = time.perf_counter() - started
    print(f"SFT: {args.steps} steps in {sft_seconds:.0f} s; "
          f"final loss {manifest['metrics'].get('train_loss', manifest['metrics'].get('loss'))}")

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval().to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    heldout = [json.loads(x) for x in (root / "data" / "heldout.jsonl").read_text().splitlines()]
    known = [json.loads(x) for x in (root / "data" / "known.jsonl").read_text().splitlines()]
    gen = GenerateConfig(do_sample=False, max_new_tokens=24, batch_size=16)
    retriever = build_retriever({"name": "bm25", "collection": str(root / "data" / "documents")})

    def accuracy(rows, qas):
        return sum(answered(r["completion"], qa["value"]) for r, qa in zip(rows, qas)) / len(qas)

    def prompts(qas):
        return [[{"role": "user", "content": qa["question"]}] for qa in qas]

    bare = accuracy(sample(model, tokenizer, prompts(heldout), gen), heldout)
    always = sample_when_unsure(model, tokenizer, prompts(heldout), gen, RetrievalConfig(retriever="-", threshold=-1),
                                retriever)
    known_bare = accuracy(sample(model, tokenizer, prompts(known), gen), known)
    eos = eos_token_ids(tokenizer, gen.stop_tokens)

    def signal(qas):
        return uncertainty_scores(model, tokenizer, [encode_prompt(tokenizer, p) for p in prompts(qas)], 4,
                                  "entropy", eos)

    u_known, u_unknown = signal(known), signal(heldout)
    calib_known, calib_unknown = u_known[::2], u_unknown[::2]
    values = sorted(set(calib_known + calib_unknown))
    candidates = [(a + b) / 2 for a, b in itertools.pairwise(values)] or values  # midpoints: a margin each side
    threshold = max(candidates, key=lambda t: (sum(u > t for u in calib_unknown) / len(calib_unknown)
                                                - sum(u > t for u in calib_known) / len(calib_known)))
    test_known, test_unknown = u_known[1::2], u_unknown[1::2]
    when_unsure = sample_when_unsure(model, tokenizer, prompts(heldout), gen,
                                     RetrievalConfig(retriever="-", threshold=threshold), retriever)
    result = {
        "heldout_accuracy_without_retrieval": bare,
        "heldout_accuracy_retrieval_always": accuracy(always, heldout),
        "heldout_accuracy_retrieval_when_unsure": accuracy(when_unsure, heldout),
        "known_accuracy_without_retrieval": known_bare,
        "threshold_entropy_nats": threshold,
        "fires_on_unknown": sum(u > threshold for u in test_unknown) / len(test_unknown),
        "fires_on_known": sum(u > threshold for u in test_known) / len(test_known),
        "mean_entropy_known": sum(u_known) / len(u_known),
        "mean_entropy_unknown": sum(u_unknown) / len(u_unknown),
        "retrieved_passage_has_the_answer": sum(any(qa["value"] in p["text"] for p in r["retrieval"]["passages"])
                                                for r, qa in zip(always, heldout)) / len(heldout),
    }
    result["sft_steps"], result["sft_seconds"] = args.steps, round(sft_seconds)
    result["model"] = f"llama hidden {args.hidden}, {args.layers} layers, device {args.device}"
    print(json.dumps(result, indent=2))
    recorder.write({"steps": args.steps, "hidden": args.hidden, "layers": args.layers, "batch_size": args.batch_size,
                    "lr": args.lr, "device": args.device, "distractors": args.distractors,
                    "heldout_questions": len(heldout), "known_questions": len(known)}, result, args.results)
    print("example:", json.dumps({"question": heldout[0]["question"], "bare": sample(
        model, tokenizer, prompts(heldout[:1]), gen)[0]["completion"], "with retrieval": always[0]["completion"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
