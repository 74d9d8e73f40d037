"""Step time of lmforge's pretrainers against a plain PyTorch loop: same model, batch, optimizer, data.

    python benchmarks/bench_pretrainer.py [--rounds 3] [--steps 20] [--threads 1] [--model nanogpt_char]

Setup: Tiny Shakespeare with the character tokenizer, nanoGPT's CPU reference (batch 12, block 64,
AdamW lr 1e-3 beta2 0.99, clip 1.0) on the ``model`` preset (default ``nanogpt_char``: a 0.8M Llama).
Each round runs, one after another in this process (the order rotated each round): the plain loop,
``pretrainer=lean`` and ``pretrainer=hf_trainer``, each for 2 x ``--steps`` steps; only the second half is timed (steady state,
no evaluation, no checkpoints). The plain loop is what a user would write by hand: random windows as
nanoGPT's ``get_batch``, forward, cross-entropy, backward, clip, AdamW step. Each run reports wall-clock
and process CPU ms/step (torch on one thread by default): on a shared machine wall time swings with
other people's jobs while CPU time counts only this process's work, so the CPU ratio is the robust one.
Medians over rounds (and the fastest round's CPU time, the least disturbed); the ratio is lmforge's
ms/step over the plain loop's (goal <= 1.03). Compare only numbers printed side by side by one run. The raw
result (every round, the machine, its load, the versions) goes to benchmarks/results/pretrainer_<date>.json
(GPU mode: pretrainer_gpu_<date>.json).

GPU mode (``--gpu``): the ``llama_124m`` preset (12 layers, width 768, tied embeddings) with a 32,768-token
vocabulary, bf16, ``torch.compile``, SDPA (flash) attention, fused AdamW, batch x block sized for an H100
(default 32 x 1024 tokens a step), on random token data (a synthetic word-level tokenizer, so nothing is
downloaded; throughput does not depend on the text). Three loops on the same card, one after another:
a plain PyTorch loop (the model and its cross-entropy compiled as one function, data already on the GPU:
the hand-written ceiling), ``pretrainer=lean`` and, unless ``--skip-hf``, ``pretrainer=hf_trainer``.
Each reports ms/step, tokens/s and MFU (training FLOPs per token = 6 x parameters + attention, over the
card's bf16 dense peak: 989 TFLOP/s for H100/H200) over the second half of its steps:

    python benchmarks/bench_pretrainer.py --gpu [--steps 50] [--batch 32] [--block 1024] [--skip-hf]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _results import Recorder
from lmforge import hookimpl  # lmforge itself imports no torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def load_model_preset(name: str) -> dict:
    import lmforge.conf
    import yaml

    return yaml.safe_load((Path(lmforge.conf.__file__).parent / "model" / f"{name}.yaml").read_text())


class StepClock:
    """An lmforge hook that notes wall and CPU time when a stage logs step metrics (its timing windows)."""

    def __init__(self):
        self.marks: dict[int, tuple[float, float]] = {}

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    @hookimpl
    def lmforge_log_metrics(self, stage_name, step, metrics, context):
        if step is not None and "loss" in metrics and step not in self.marks:
            self.marks[step] = self.now()


def plain_loop(tokens, model_cfg: dict, tokenizer, steps: int, batch: int, block: int, seed: int):
    """(wall, CPU) ms/step of a hand-written nanoGPT-style loop over the same transformers model (2nd half)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from lmforge.plugins.pretrainers.model import build_model_config
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = build_model_config(model_cfg, tokenizer)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99), eps=1e-8, fused=True)  # lmforge's optimizer too
    data = np.asarray(tokens)
    model.train()
    started = None
    for step in range(2 * steps):
        if step == steps:  # CPU tensors: every step has finished when Python gets here
            started = StepClock.now()
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 101)
        ix = torch.randint(len(data) - block - 1, (batch,)).numpy()
        window = torch.from_numpy(np.stack([data[i:i + block + 1] for i in ix]).astype(np.int64))
        logits = model(input_ids=window[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, config.vocab_size), window[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    float(loss.detach())
    ended = StepClock.now()
    return tuple(1000 * (e - s) / steps for e, s in zip(ended, started))


def lmforge_stage(plugin: str, text: Path, tokenizer_dir: Path, model_cfg: dict, steps: int, batch: int,
                  block: int, work: Path, cache: str):
    """(wall, CPU) ms/step of an lmforge pretrainer stage between its step-``steps`` and final log lines."""
    import lmforge

    stage_cls = lmforge.registry().get("pretrainer", plugin)
    stage = stage_cls(max_steps=2 * steps, batch_size=batch, block_size=block, stride=1, val_fraction=0.1,
                      learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, adam_beta2=0.99, grad_clip=1.0,
                      eval_steps=0, eval_batches=1, save_steps=0, logging_steps=steps, cache_dir=cache)
    context = lmforge.RunContext(stage_name="pretrainer", quiet=True, model=dict(model_cfg), work_dir=work / "work",
                                 hardware=lmforge.Hardware(device="cpu", precision="fp32"))
    out = work / f"{plugin}-{time.time_ns()}"
    clock = StepClock()
    lmforge.register_plugin(clock)
    try:
        lmforge.run_stage(stage, {"text": text, "tokenizer": tokenizer_dir}, out, context)
    finally:
        lmforge.unregister_plugin(clock)
    (wall_a, cpu_a), (wall_b, cpu_b) = clock.marks[steps], clock.marks[2 * steps]
    return 1000 * (wall_b - wall_a) / steps, 1000 * (cpu_b - cpu_a) / steps


# ---------------------------------------------------------------- GPU mode

def synthetic_tokenizer(out: Path, vocab_size: int):
    """A word-level tokenizer over ``w4 … w<vocab-1>`` plus lmforge's specials, saved as a transformers dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|pad|>", bos_token="<|bos|>",
                                        eos_token="<|eos|>", unk_token="<|unk|>")
    tokenizer.save_pretrained(str(out))
    return tokenizer


def synthetic_corpus(path: Path, vocab_size: int, n_tokens: int, seed: int = 0) -> None:
    import numpy as np

    ids = np.random.default_rng(seed).integers(4, vocab_size, n_tokens)
    with open(path, "w") as out:
        out.writelines(" ".join(f"w{i}" for i in ids[start:start + 128].tolist()) + "\n" for start in range(0, n_tokens, 128))


def plain_gpu_loop(tokens, model_cfg: dict, tokenizer, steps: int, batch: int, block: int, device: str = "cuda",
                   peak: float | None = None) -> dict:
    """A hand-written GPU loop: data on the GPU, model + loss compiled as one function, bf16 autocast."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from lmforge.plugins.pretrainers.model import build_model_config, flops_per_token, peak_flops
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    config = build_model_config(model_cfg, tokenizer)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    data = torch.from_numpy(np.asarray(tokens).astype(np.int64)).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    @torch.compile
    def loss_of(window):
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = model(input_ids=window[:, :-1]).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))

    offsets = torch.arange(block + 1, device=device)
    model.train()
    started = None
    for step in range(2 * steps):
        if step == steps:
            sync()
            started = time.perf_counter()
        starts = torch.randint(len(data) - block - 1, (batch, 1), device=device)
        loss = loss_of(data[starts + offsets])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    seconds = (time.perf_counter() - started) / steps
    tokens_per_s = batch * block / seconds
    mfu = flops_per_token(model, block) * tokens_per_s / (peak or peak_flops(None, True))
    return {"ms_per_step": 1000 * seconds, "tokens_per_s": tokens_per_s, "mfu": mfu, "loss": float(loss.detach()),
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else 0.0}


def gpu_stage(plugin: str, text: Path, tokenizer_dir: Path, model_cfg: dict, steps: int, batch: int, block: int,
              work: Path, cache: str, device: str = "cuda", peak: float | None = None) -> dict:
    """An lmforge pretrainer stage on the GPU; speed from its own metrics over its second ``steps`` steps."""
    import lmforge
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stage = lmforge.registry().get("pretrainer", plugin)(
        max_steps=2 * steps, batch_size=batch, block_size=block, val_fraction=0.01, learning_rate=6e-4,
        adam_beta2=0.95, warmup_steps=10, eval_steps=0, eval_batches=1, save_steps=0, logging_steps=steps,
        cache_dir=cache, peak_tflops=peak / 1e12 if peak else None)
    context = lmforge.RunContext(stage_name="pretrainer", quiet=True, model=dict(model_cfg), work_dir=work / plugin,
                                 hardware=lmforge.Hardware(device=device, precision="bf16", compile=True))
    clock = StepClock()
    lmforge.register_plugin(clock)
    try:
        lmforge.run_stage(stage, {"text": text, "tokenizer": tokenizer_dir}, work / f"{plugin}-out", context)
    finally:
        lmforge.unregister_plugin(clock)
    seconds = (clock.marks[2 * steps][0] - clock.marks[steps][0]) / steps
    logged = [json.loads(line) for line in (work / f"{plugin}-out" / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in logged if "mfu" in m][-1]
    return {"ms_per_step": 1000 * seconds, "tokens_per_s": batch * block / seconds, "mfu": last["mfu"],
            "logged_tokens_per_s": last["tokens_per_s"], "loss": last.get("loss"),
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else 0.0}


def gpu_main(args) -> int:
    import torch

    device, peak = ("cpu", 1e12) if args.smoke else ("cuda", None)
    if device == "cuda" and not torch.cuda.is_available():
        print("--gpu: no CUDA device visible", file=sys.stderr)
        return 2
    from lmforge.plugins.pretrainers.corpus import tokenized_corpus
    from lmforge.plugins.pretrainers.windows import split_tokens

    recorder = Recorder("pretrainer_gpu" if not args.smoke else "pretrainer_gpu_smoke",
                        packages=("lmforge", "torch", "transformers", "accelerate"))
    work = Path(tempfile.mkdtemp(prefix="bench-pretrainer-gpu-"))
    cache = str(work / "cache")
    model_cfg = load_model_preset("llama_124m")
    if args.smoke:  # a check of the code path on CPU: tiny model, few steps; the numbers mean nothing
        model_cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2)
    model_cfg["max_position_embeddings"] = max(model_cfg.get("max_position_embeddings", 0), args.block)
    tokenizer_dir, text = work / "tokenizer", work / "random_words.txt"
    tokenizer = synthetic_tokenizer(tokenizer_dir, args.vocab)
    synthetic_corpus(text, args.vocab, args.corpus_tokens)
    started = time.perf_counter()
    tokens, meta = tokenized_corpus(text, tokenizer_dir, tokenizer, "text", cache)
    print(f"tokenised {meta['tokens']:,} tokens ({meta['bytes'] / 1e6:.0f} MB) into shards in "
          f"{time.perf_counter() - started:.1f}s", flush=True)
    train, _ = split_tokens(tokens, 0.01)
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke check)"
    print(f"card: {card}; torch {torch.__version__}; model llama_124m, vocab {args.vocab}, batch {args.batch} x "
          f"block {args.block}, {args.steps} timed steps after {args.steps} warm-up (compile) steps", flush=True)
    variants = ["plain", "lean"] + ([] if args.skip_hf else ["hf_trainer"])
    results = {}
    for variant in variants:
        started = time.perf_counter()
        if variant == "plain":
            results[variant] = plain_gpu_loop(train, model_cfg, tokenizer, args.steps, args.batch, args.block,
                                              device, peak)
        else:
            results[variant] = gpu_stage(variant, text, tokenizer_dir, model_cfg, args.steps, args.batch, args.block,
                                         work, cache, device, peak)
        r = results[variant]
        print(f"{variant:<11} {r['ms_per_step']:8.1f} ms/step {r['tokens_per_s']:>11,.0f} tok/s  MFU {r['mfu']:.3f}  "
              f"peak mem {r['peak_mem_gb']:.1f} GB  ({time.perf_counter() - started:.0f}s with compile)", flush=True)
    base = results["plain"]["tokens_per_s"]
    print(f"\n{'loop':<12}{'ms/step':>9}{'tokens/s':>12}{'MFU':>7}{'vs plain':>10}   card: {card}")
    for variant, r in results.items():
        print(f"{variant:<12}{r['ms_per_step']:>9.1f}{r['tokens_per_s']:>12,.0f}{r['mfu']:>7.3f}"
              f"{r['tokens_per_s'] / base:>9.2f}x")
    if not args.smoke:  # a smoke check's numbers mean nothing
        recorder.write({"mode": "gpu", "card": card, "model": "llama_124m", "vocab": args.vocab, "batch": args.batch,
                        "block": args.block, "timed_steps": args.steps, "note": "one run per loop, in turn (not rounds)"},
                       results, args.out)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (after as many warm-up steps)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="nanogpt_char", help="a conf/model preset")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--skip-hf", action="store_true", help="leave the HF Trainer plugin out")
    parser.add_argument("--gpu", action="store_true", help="GPU mode: llama_124m MFU, bf16 + compile (see above)")
    parser.add_argument("--vocab", type=int, default=32768, help="--gpu: vocabulary size")
    parser.add_argument("--corpus-tokens", type=int, default=4_000_000, help="--gpu: random tokens to train on")
    parser.add_argument("--smoke", action="store_true", help="--gpu's code path on CPU with a tiny model")
    parser.add_argument("--out", type=Path, help="raw result file (default: benchmarks/results/pretrainer_<date>.json)")
    args = parser.parse_args()
    if args.smoke:
        args.gpu = True
        args.batch, args.block, args.steps, args.vocab, args.corpus_tokens = 4, 64, 3, 512, 50_000
    if args.gpu:
        if args.batch == 12 and args.block == 64:  # the CPU defaults: size for an H100 instead
            args.batch, args.block = 32, 1024
        if args.steps == 20:
            args.steps = 50
        return gpu_main(args)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    import lmforge
    from lmforge.plugins.pretrainers.corpus import tokenized_corpus
    from lmforge.plugins.pretrainers.windows import split_tokens
    from lmforge.plugins.tokenizers.char import CharTokenizer
    from transformers import AutoTokenizer

    if not args.data.is_file():
        print(f"data not found: {args.data} (pass --data)", file=sys.stderr)
        return 2
    recorder = Recorder("pretrainer", packages=("lmforge", "torch", "transformers", "accelerate"))
    model_cfg = load_model_preset(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-pretrainer-"))
    cache = str(work / "cache")
    tokenizer_dir = work / "tokenizer"
    lmforge.run_stage(CharTokenizer(), {"text": args.data}, tokenizer_dir, lmforge.RunContext(quiet=True))
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokens, _ = tokenized_corpus(args.data, tokenizer_dir, tokenizer, "text", cache)
    train, _ = split_tokens(tokens, 0.1)

    variants = ["plain", "lean"] + ([] if args.skip_hf else ["hf_trainer"])
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for round_index in range(args.rounds):
        shift = round_index % len(variants)  # the order rotates: each loop goes first in turn
        for variant in variants[shift:] + variants[:shift]:
            if variant == "plain":
                ms = plain_loop(train, model_cfg, tokenizer, args.steps, args.batch, args.block, seed=round_index)
            else:
                ms = lmforge_stage(variant, args.data, tokenizer_dir, model_cfg, args.steps, args.batch, args.block,
                                   work, cache)
            times[variant].append(ms)
            print(f"round {round_index + 1}: {variant:<10} wall {ms[0]:7.1f}  cpu {ms[1]:7.1f} ms/step", flush=True)

    tokens_per_step = args.batch * args.block
    medians = {v: [statistics.median(t[i] for t in times[v]) for i in (0, 1)] for v in variants}
    base_wall, base_cpu = medians["plain"]
    print(f"\nmodel={args.model} batch={args.batch} block={args.block} threads={args.threads} "
          f"rounds={args.rounds} timed steps/run={args.steps} (medians; machine may be shared)")
    print(f"{'loop':<12}{'wall ms/step':>14}{'tokens/s':>10}{'ratio':>8}{'cpu ms/step':>14}{'tokens/cpu-s':>14}"
          f"{'cpu ratio':>11}{'min cpu ms':>12}{'min ratio':>11}")
    base_min = min(t[1] for t in times["plain"])
    for variant in variants:
        wall, cpu = medians[variant]
        fastest = min(t[1] for t in times[variant])  # least disturbed by other jobs
        print(f"{variant:<12}{wall:>14.1f}{1000 * tokens_per_step / wall:>10,.0f}{wall / base_wall:>8.3f}"
              f"{cpu:>14.1f}{1000 * tokens_per_step / cpu:>14,.0f}{cpu / base_cpu:>11.3f}"
              f"{fastest:>12.1f}{fastest / base_min:>11.3f}")
    results = {variant: {"wall_ms_per_step": [round(t[0], 2) for t in times[variant]],
                         "cpu_ms_per_step": [round(t[1], 2) for t in times[variant]],
                         "median_wall_ms": round(medians[variant][0], 2), "median_cpu_ms": round(medians[variant][1], 2),
                         "wall_ratio_to_plain": round(medians[variant][0] / base_wall, 3),
                         "cpu_ratio_to_plain": round(medians[variant][1] / base_cpu, 3)} for variant in variants}
    recorder.write({"mode": "cpu", "model": args.model, "batch": args.batch, "block": args.block,
                    "threads": args.threads, "rounds": args.rounds, "timed_steps_per_run": args.steps}, results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
