"""Sampler throughput, side by side with a plain ``model.generate`` loop on the same model.

    python benchmarks/bench_sampler.py                       # random small Llama, 32 prompts, CPU
    python benchmarks/bench_sampler.py --model runs/x/aligner --prompts 64 --max-new-tokens 128

Prints three comparisons (greedy decoding, so every contender produces the same tokens):
  1. overhead: lmforge's sampler vs a plain ``apply_chat_template`` + ``generate`` + ``batch_decode`` loop
     in batches of the same size (goal: time ratio <= 1.05);
  2. batched vs one-by-one: the sampler with ``batch_size`` B vs 1;
  3. the HTTP server: the same prompts as concurrent requests vs one request at a time.
Comparisons 1 and 2 are medians of ``--rounds`` interleaved rounds (every contender once a round, the order
rotated); 3 is one run of each. The raw result (every round, the machine, its load, the versions) goes to
benchmarks/results/sampler_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _results import Recorder, interleaved, median

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def build_model(directory: Path, hidden: int, layers: int) -> Path:
    """A random Llama with a BPE tokenizer trained on lmforge's bundled text (no download)."""
    import lmforge
    from lmforge.plugins.tokenizers.bpe import ByteLevelBPE
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, set_seed

    context = lmforge.RunContext(hardware=lmforge.Hardware(device="cpu", precision="fp32"), quiet=True)
    lmforge.run_stage(ByteLevelBPE(vocab_size=2048), {"text": lmforge.sample_data_path("raw_text.jsonl")},
                      directory / "tokenizer", context)
    tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
    set_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 3,
                         num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 1),
                         num_key_value_heads=max(hidden // 128, 1), max_position_embeddings=1024,
                         tie_word_embeddings=False, initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out = directory / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def load_questions(count: int) -> list[list[dict]]:
    path = SHARED_DATA / "gsm8k_test.jsonl"
    if path.is_file():
        questions = [json.loads(line)["question"] for line in path.read_text().splitlines()[:count]]
    else:
        import lmforge
        from lmforge.plugins.lib.formats import load_prompts

        base = [p[-1]["content"] for p in load_prompts(lmforge.sample_data_path("prompts.jsonl"))]
        questions = [f"{base[i % len(base)]} ({i})" for i in range(count)]
    return [[{"role": "user", "content": q}] for q in questions]


def best_time(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def measure_time_inside_generate(model, function):
    """(total seconds, seconds spent inside ``model.generate``) for one call of ``function``."""
    original, spent = model.generate, [0.0]

    def timed_generate(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    model.generate = timed_generate
    try:
        started = time.perf_counter()
        function()
        return time.perf_counter() - started, spent[0]
    finally:
        del model.generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model dir (default: build a random one)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", "--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="raw result file (default: benchmarks/results/sampler_<date>.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-server", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    recorder = Recorder("sampler", packages=("lmforge", "torch", "transformers", "openai"))
    import torch
    from lmforge.plugins.lib.generation import GenerateConfig, generate_kwargs, sample
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench_sampler_"))
    model_dir = Path(args.model) if args.model else build_model(workdir, args.hidden, args.layers)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval().to(device)
    prompts = load_questions(args.prompts)
    settings = GenerateConfig(max_new_tokens=args.max_new_tokens, do_sample=False, batch_size=args.batch_size,
                              system_prompt=None)
    kwargs = generate_kwargs(settings, tokenizer)
    print(f"model {model_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params) on {device}, "
          f"torch threads {torch.get_num_threads()}; {len(prompts)} prompts, {args.max_new_tokens} new tokens, "
          f"greedy, medians of {args.rounds} interleaved rounds")

    def plain_loop(order=None):
        ordered = [prompts[i] for i in order] if order else prompts
        texts = []
        for start in range(0, len(ordered), args.batch_size):
            encoded = tokenizer.apply_chat_template(ordered[start:start + args.batch_size],
                                                    add_generation_prompt=True, return_tensors="pt",
                                                    padding=True, return_dict=True).to(device)
            with torch.no_grad():
                output = model.generate(**encoded, **kwargs)
            texts += tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        if order:
            texts = [text for _, text in sorted(zip(order, texts))]
        return texts

    # the sampler groups prompts of similar length; the same batches done by hand isolate its overhead
    lengths = [len(tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=False)) for p in prompts]
    by_length = sorted(range(len(prompts)), key=lambda i: lengths[i])

    def lmforge_sampler(batch_size=args.batch_size):
        settings.batch_size = batch_size
        return sample(model, tokenizer, prompts, settings)

    plain_loop()  # warm-up
    lmforge_sampler()

    def timed(function):
        def run():
            started = time.perf_counter()
            result = function()
            return time.perf_counter() - started, result
        return run

    runs = interleaved({"plain": timed(plain_loop), "sorted": timed(lambda: plain_loop(by_length)),
                        "sampler": timed(lmforge_sampler), "sampler_batch_1": timed(lambda: lmforge_sampler(1))},
                       args.rounds)
    plain_seconds, sorted_seconds, sampler_seconds, single_seconds = (
        median(seconds for seconds, _ in runs[name]) for name in ("plain", "sorted", "sampler", "sampler_batch_1"))
    plain_texts, rows = runs["plain"][0][1], runs["sampler"][0][1]
    tokens = sum(row["completion_tokens"] for row in rows)
    same = sum(row["completion"] == text for row, text in zip(rows, plain_texts))
    inside = measure_time_inside_generate(model, lambda: lmforge_sampler())
    print("\n| what | seconds | tokens/s | ratio |\n|---|---|---|---|")
    print(f"| plain generate loop (batch {args.batch_size}) | {plain_seconds:.2f} | {tokens / plain_seconds:.0f} | 1.00 |")
    print(f"| plain loop, batches grouped by length as the sampler does | {sorted_seconds:.2f} | "
          f"{tokens / sorted_seconds:.0f} | {sorted_seconds / plain_seconds:.2f} |")
    print(f"| lmforge sampler (batch {args.batch_size}) | {sampler_seconds:.2f} | {tokens / sampler_seconds:.0f} | "
          f"{sampler_seconds / plain_seconds:.2f} vs plain, {sampler_seconds / sorted_seconds:.2f} vs the same "
          f"batches (overhead; goal <= 1.05) |")
    print(f"| lmforge sampler (batch 1, one by one) | {single_seconds:.2f} | {tokens / single_seconds:.0f} | "
          f"batched is {single_seconds / sampler_seconds:.1f}x faster |")
    print(f"\nlmforge sampler, one run: {inside[0]:.2f} s of which {inside[1]:.2f} s inside model.generate -> "
          f"time ratio {inside[0] / inside[1]:.3f} to generate alone (its own overhead, robust to machine load)")
    print(f"{same}/{len(rows)} sampler completions identical to the plain loop's; {tokens} tokens generated")

    results = {name: {"seconds": [round(seconds, 3) for seconds, _ in runs[name]],
                      "median_s": round(median(seconds for seconds, _ in runs[name]), 3)} for name in runs}
    results.update(tokens=tokens, identical_completions=f"{same}/{len(rows)}",
                   sampler_over_plain=round(sampler_seconds / plain_seconds, 3),
                   sampler_over_same_batches=round(sampler_seconds / sorted_seconds, 3),
                   batched_speedup_over_batch_1=round(single_seconds / sampler_seconds, 2),
                   one_run_seconds_total_and_inside_generate=[round(inside[0], 3), round(inside[1], 3)],
                   time_ratio_to_generate_alone=round(inside[0] / inside[1], 3))
    if not args.no_server:
        results["server"] = serve_comparison(model_dir, prompts, args)
    recorder.write({"model": str(args.model or f"random llama hidden {args.hidden}, {args.layers} layers"),
                    "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                    "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                    "rounds": args.rounds, "torch_threads": torch.get_num_threads(), "device": device}, results,
                   args.out)


def serve_comparison(model_dir, prompts, args) -> None:
    from lmforge.plugins.serve.cli import running_server
    from openai import OpenAI

    with running_server(model_dir, max_batch_size=args.batch_size, batch_wait_s=0.01) as server:
        client = OpenAI(base_url=server.url, api_key="-", max_retries=0, timeout=600)

        def ask(messages):
            response = client.chat.completions.create(model=Path(model_dir).name, messages=messages,
                                                      max_tokens=args.max_new_tokens, temperature=0)
            return response.choices[0].message.content, response.usage.completion_tokens

        ask(prompts[0])  # warm-up
        sequential_seconds, sequential = best_time(lambda: [ask(p) for p in prompts], 1)

        def concurrent():
            with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
                return list(pool.map(ask, prompts))

        concurrent_seconds, together = best_time(concurrent, 1)
        tokens = sum(count for _, count in together)
        same = sum(a[0] == b[0] for a, b in zip(sequential, together))
        sizes = server.model_server.worker.batch_sizes
        print(f"\nserver ({len(prompts)} chat requests, greedy): sequential {sequential_seconds:.2f} s "
              f"({tokens / sequential_seconds:.0f} tok/s), concurrent {concurrent_seconds:.2f} s "
              f"({tokens / concurrent_seconds:.0f} tok/s): {sequential_seconds / concurrent_seconds:.1f}x; "
              f"largest batch {max(sizes)}; {same}/{len(prompts)} answers identical")
        return {"sequential_seconds_one_run": round(sequential_seconds, 3),
                "concurrent_seconds_one_run": round(concurrent_seconds, 3), "tokens": tokens,
                "speedup": round(sequential_seconds / concurrent_seconds, 2), "largest_batch": max(sizes),
                "identical_answers": f"{same}/{len(prompts)}"}


if __name__ == "__main__":
    sys.exit(main())
