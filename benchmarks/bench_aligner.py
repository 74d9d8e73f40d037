"""lmforge's DPO stage against a plain TRL ``DPOTrainer`` script: same model, preference pairs and settings.

    python benchmarks/bench_aligner.py [--rounds 3] [--steps 100] [--threads 1]

lmforge's ``dpo`` aligner wraps TRL's ``DPOTrainer``; this says what the wrapper costs and what it changes. Setup,
outside every timing (bench_finetuner.py's): lmforge's default tokenizer on the bundled pretraining text, a
seeded random ``model=small``, then 100 steps of lmforge's SFT on the bundled chats, so that DPO starts from a
model that answers in the chat format. Both sides then train that model on the bundled preference pairs
(core/sample_data/preferences.jsonl, 1,137 pairs) with the default run's DPO settings: DPO's sigmoid loss plus
the SFT loss on the chosen answers (weights 1 and 1), beta 0.1, batch 8, AdamW at 1e-4, ``max_length`` 128,
the frozen input model as the reference, seed 0, fp32 on the CPU, no checkpoints, the model saved as
safetensors. The plain side is what a user writes by hand with TRL (``Dataset.from_list`` of the pairs,
``DPOConfig``, ``DPOTrainer``, ``train``, ``save_pretrained``); the two trainers' ``TrainingArguments`` are
compared field by field (``args_differences``; there should be none).

One thing differs on purpose, and the losses show it: lmforge cuts each tokenized answer right after the chat
template's end-of-turn token (``training.end_completions_at_turn_end``). TRL takes an answer as
``template(prompt + answer)`` minus ``template(prompt)``, which keeps the newline lmforge's template writes after
``<|end|>``: the plain script trains the model to say one token past the end of its turn. The benchmark counts
the answer tokens each side trains on (``answer_tokens``).

Each round runs both, the order alternating; each reports the whole call's wall time (pair file to saved model),
ms/step over the second half of its steps and its final training loss. Medians over rounds; ratio = lmforge /
plain. The raw result goes to benchmarks/results/aligner_<date>.json.
"""

from __future__ import annotations

import copy
import itertools
import json
import tempfile
import time
from pathlib import Path

import lmforge  # lmforge itself imports no torch
from _results import interleaved, median
from bench_finetuner import (
    bench_parser,
    cpu_context,
    differences,
    lmforge_sft,
    log_clock,
    prepare,
    start,
    timed_stage,
)
from lmforge.config import sample_data_path

DPO = {"beta": 0.1, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0], "batch_size": 8,
       "learning_rate": 1e-4, "max_length": 128, "seed": 0}
SFT_STEPS = 100


def answer_tokens(trainer) -> int:
    """Tokens in the chosen and rejected answers a DPO trainer's dataset holds (before its collator's cut at
    ``max_length``, which no bundled pair reaches)."""
    data = trainer.train_dataset
    return sum(len(ids) for column in ("chosen_ids", "rejected_ids") for ids in data[column])


def token_rows(ours, theirs) -> dict:
    """Row by row: pairs whose prompt tokens are the same on both sides, and answers (chosen and rejected) that
    are the plain side's minus exactly its last token, which is the token after the end-of-turn token."""
    a, b = ours.train_dataset, theirs.train_dataset
    end = ours.processing_class.convert_tokens_to_ids("<|end|>")
    same_prompt = sum(x == y for x, y in zip(a["prompt_ids"], b["prompt_ids"]))
    one_less = sum(x == y[:-1] and y[-2] == end for column in ("chosen_ids", "rejected_ids")
                   for x, y in zip(a[column], b[column]))
    return {"pairs": len(a), "same_prompt_ids": same_prompt, "answers_one_token_shorter_after_end": one_less}


def plain_trl(model_dir: Path, pairs: Path, steps: int, out: Path, keep: dict) -> dict:
    """The hand-written TRL script, timed from reading the pair file to the saved model."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    marks: dict[int, float] = {}
    started = time.perf_counter()
    rows = [json.loads(line) for line in pairs.read_text(encoding="utf-8").splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    reference = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval().requires_grad_(False)
    args = DPOConfig(
        output_dir=str(out / "checkpoints"), max_steps=steps, per_device_train_batch_size=DPO["batch_size"],
        per_device_eval_batch_size=DPO["batch_size"], learning_rate=DPO["learning_rate"], beta=DPO["beta"],
        loss_type=DPO["loss_type"], loss_weights=DPO["loss_weights"], max_length=DPO["max_length"],
        logging_steps=steps // 2, save_strategy="no", save_steps=1, save_total_limit=2, report_to="none",
        seed=DPO["seed"], data_seed=DPO["seed"], use_cpu=True, bf16=False, gradient_checkpointing=False,
        disable_tqdm=True, num_train_epochs=1.0, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0)
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, callbacks=[log_clock(marks)])
    keep.setdefault("args", copy.deepcopy(trainer.args))  # as built, untrained
    keep.setdefault("trainer", trainer)
    result = trainer.train()
    trainer.model.save_pretrained(str(out / "model"), safe_serialization=True)
    tokenizer.save_pretrained(str(out / "model"))
    wall = time.perf_counter() - started
    half = steps // 2
    return {"wall_s": wall, "ms_per_step": 1000 * (marks[steps] - marks[half]) / (steps - half),
            "train_loss": result.training_loss}


def dpo_stage(steps: int):
    return lmforge.registry().get("aligner", "dpo")(
        max_steps=steps, batch_size=DPO["batch_size"], learning_rate=DPO["learning_rate"], beta=DPO["beta"],
        loss_type=DPO["loss_type"], loss_weights=DPO["loss_weights"], max_length=DPO["max_length"],
        save_steps=0, logging_steps=steps // 2)


def lmforge_dpo(model_dir: Path, pairs: Path, steps: int, out: Path) -> dict:
    """``lmforge.run_stage`` of the dpo aligner with the same settings, timed the same way."""
    run = timed_stage(dpo_stage(steps), {"model": model_dir, "data": pairs}, steps, out, DPO["seed"])
    return {**{k: v for k, v in run.items() if k != "metrics"}, "train_loss": run["metrics"].get("train_loss")}


def main(argv=None) -> None:
    args, recorder = start(bench_parser(__doc__, "aligner"), argv, "aligner")
    from lmforge.plugins.aligners.dpo import build_dpo
    work = Path(tempfile.mkdtemp(prefix="bench-aligner-"))
    base, train, held = prepare(work)
    lmforge_sft(base, train, held, SFT_STEPS, work / "sft")
    model_dir, pairs = work / "sft" / "model", Path(sample_data_path("preferences.jsonl"))
    keep: dict = {}
    runs = itertools.count()
    results = interleaved({
        "plain TRL": lambda: plain_trl(model_dir, pairs, args.steps, work / f"plain-{next(runs)}", keep),
        "lmforge dpo": lambda: lmforge_dpo(model_dir, pairs, args.steps, work / f"lmforge-{next(runs)}"),
    }, args.rounds, log=None)
    ours = build_dpo(dpo_stage(args.steps).config, {"model": model_dir, "data": pairs},
                     cpu_context("aligner", work / "args", DPO["seed"]))
    diff = differences(ours.args, keep["args"])
    tokens = {"lmforge dpo": answer_tokens(ours), "plain TRL": answer_tokens(keep["trainer"])}
    rows = token_rows(ours, keep["trainer"])
    summary = {name: {key: median([r[key] for r in rounds]) for key in rounds[0]} for name, rounds in results.items()}
    for key in ("wall_s", "ms_per_step"):
        summary[f"ratio_{key}"] = summary["lmforge dpo"][key] / summary["plain TRL"][key]
    width = max(map(len, results))
    print(f"{args.rounds} rounds x {args.steps} steps, batch {DPO['batch_size']} pairs, {args.threads} thread(s); "
          "medians")
    print(f"{'':{width}}  {'wall s':>7}  {'ms/step':>8}  {'train loss':>10}  {'answer tokens':>13}")
    for name in results:
        s = summary[name]
        print(f"{name:{width}}  {s['wall_s']:7.1f}  {s['ms_per_step']:8.1f}  {s['train_loss']:10.4f}  {tokens[name]:13,}")
    print(f"lmforge / plain: wall {summary['ratio_wall_s']:.3f}, ms/step {summary['ratio_ms_per_step']:.3f}")
    print("TrainingArguments differences (lmforge, plain):", diff or "none")
    print(f"of {rows['pairs']:,} pairs: same prompt tokens {rows['same_prompt_ids']:,}; answers one token shorter, "
          f"the token after <|end|>: {rows['answers_one_token_shorter_after_end']:,} of {2 * rows['pairs']:,}")
    settings = {**DPO, "rounds": args.rounds, "steps": args.steps, "threads": args.threads,
                "model": f"model=small, random init (seed 0), then {SFT_STEPS} steps of lmforge SFT on the bundled chats",
                "pairs": "core/sample_data/preferences.jsonl"}
    recorder.write(settings, {"rounds": results, "medians": summary, "args_differences": diff,
                              "answer_tokens": tokens, "token_rows": rows}, args.out)


if __name__ == "__main__":
    main()
