"""lmforge's SFT stage against a plain TRL ``SFTTrainer`` script: same base model, data and settings.

    python benchmarks/bench_finetuner.py [--rounds 3] [--steps 100] [--threads 1] [--trl-defaults]

lmforge's finetuner wraps TRL's ``SFTTrainer``; this says what the wrapper costs and whether it trains the same
model. Setup, outside every timing: lmforge's default tokenizer (byte-level BPE, 2,048 tokens, its chat template)
is trained on the bundled pretraining text; a randomly initialised default model (``model=small``, seeded) is
saved once as the base; the bundled chats (core/sample_data/sft.jsonl) are split into the first 1,130 for
training and the last 60 for evaluation, both written once to files that both sides read.

Both sides do the same work with the same settings: read the chat file, fill the ``{{name}}``/``{{author}}``
placeholders and add the default run's system prompt, loss on the replies only (the chat template's generation
markers), ``max_length`` 128, batch 16, AdamW at 1e-3 with a cosine schedule and 20 warmup steps, seed 0, fp32
on the CPU, no checkpoints, the held-out loss before and after training, the model saved as safetensors. The
plain side is what a user writes by hand with TRL (``Dataset.from_list``, ``SFTConfig``, ``SFTTrainer``,
``evaluate``, ``train``, ``evaluate``, ``save_pretrained``); the lmforge side is ``lmforge.run_stage`` of the
``sft`` finetuner with those parameters (its data checks, truncation policy, metrics and manifest included).
The two trainers' ``TrainingArguments`` are compared field by field and every difference beyond paths is
recorded (``args_differences``); there should be none.

Each round runs both, the order alternating; each reports the whole call's wall time (chat file to saved model),
ms/step over the second half of its steps (between its step-N and step-2N log lines, N = ``--steps`` / 2), its
final training loss and its held-out loss. Medians over rounds; ratio = lmforge / plain. The raw result goes to
benchmarks/results/finetuner_<date>.json.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lmforge  # lmforge itself imports no torch
from _results import Recorder, interleaved, median
from lmforge import hookimpl
from lmforge.config import sample_data_path

SYSTEM = "You are {{name}}, a small assistant made by {{author}}."
PLACEHOLDERS = {"name": "Forge", "author": "the lmforge project"}
EVAL_ROWS = 60
SETTINGS = {"batch_size": 16, "learning_rate": 1e-3, "lr_scheduler": "cosine", "warmup_steps": 20,
            "max_length": 128, "weight_decay": 0.0, "seed": 0}


class StepClock:
    """An lmforge hook noting the wall time of each step's first training-loss log line."""

    def __init__(self):
        self.marks: dict[int, float] = {}

    @hookimpl
    def lmforge_log_metrics(self, stage_name, step, metrics, context):
        if step is not None and "loss" in metrics and step not in self.marks:
            self.marks[step] = time.perf_counter()


def log_clock(marks: dict[int, float]):
    """A ``TrainerCallback`` noting, in ``marks``, the wall time of each step's first training-loss log line."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and state.global_step not in marks:
                marks[state.global_step] = time.perf_counter()

    return Clock()


def prepare(work: Path) -> tuple[Path, Path, Path]:
    """(base model dir, training chats, held-out chats): the bundled text's tokenizer, a seeded random model."""
    import lmforge.conf
    import torch
    import yaml
    from lmforge.plugins.pretrainers.model import build_model_config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer_dir, base = work / "tokenizer", work / "base"
    stage = lmforge.registry().get("tokenizer", "bpe")(vocab_size=2048)
    lmforge.run_stage(stage, {"text": sample_data_path("raw_text.jsonl")}, tokenizer_dir, lmforge.RunContext(quiet=True))
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    preset = yaml.safe_load((Path(lmforge.conf.__file__).parent / "model" / "small.yaml").read_text())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(build_model_config(preset, tokenizer))
    model.save_pretrained(str(base), safe_serialization=True)
    tokenizer.save_pretrained(str(base))
    rows = Path(sample_data_path("sft.jsonl")).read_text(encoding="utf-8").splitlines()
    train, held = work / "train.jsonl", work / "eval.jsonl"
    train.write_text("\n".join(rows[:-EVAL_ROWS]) + "\n", encoding="utf-8")
    held.write_text("\n".join(rows[-EVAL_ROWS:]) + "\n", encoding="utf-8")
    return base, train, held


def plain_trl(base: Path, train: Path, held: Path, steps: int, out: Path, keep: dict,
              trl_defaults: bool = False) -> dict:
    """The hand-written TRL script, timed from reading the chat file to the saved model. With ``trl_defaults``
    it leaves bf16 and gradient checkpointing at TRL's defaults (both on) instead of turning them off as
    lmforge's CPU run does."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    marks: dict[int, float] = {}
    started = time.perf_counter()

    def fill(text: str) -> str:
        for key, value in PLACEHOLDERS.items():
            text = text.replace("{{" + key + "}}", value)
        return text

    def chats(path: Path) -> list[dict]:
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            messages = [{**m, "content": fill(m["content"])} for m in json.loads(line)["messages"]]
            if messages[0]["role"] != "system":
                messages = [{"role": "system", "content": fill(SYSTEM)}, *messages]
            rows.append({"messages": messages})
        return rows

    torch.manual_seed(SETTINGS["seed"])
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base))
    same = {} if trl_defaults else {"bf16": False, "gradient_checkpointing": False}
    args = SFTConfig(
        **same, num_train_epochs=1.0, completion_only_loss=False, save_total_limit=2, save_steps=1,
        output_dir=str(out / "checkpoints"), max_steps=steps, per_device_train_batch_size=SETTINGS["batch_size"],
        per_device_eval_batch_size=SETTINGS["batch_size"], learning_rate=SETTINGS["learning_rate"],
        lr_scheduler_type=SETTINGS["lr_scheduler"], warmup_steps=SETTINGS["warmup_steps"],
        weight_decay=SETTINGS["weight_decay"], max_length=SETTINGS["max_length"], truncation_mode="keep_start",
        assistant_only_loss=True, logging_steps=steps // 2, save_strategy="no", eval_strategy="steps",
        eval_steps=steps, report_to="none", seed=SETTINGS["seed"], data_seed=SETTINGS["seed"], use_cpu=True,
        disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(chats(train)),
                         eval_dataset=Dataset.from_list(chats(held)), processing_class=tokenizer,
                         callbacks=[log_clock(marks)])
    keep.setdefault("defaults" if trl_defaults else "args", copy.deepcopy(trainer.args))  # as built, untrained
    before = trainer.evaluate()["eval_loss"]
    result = trainer.train()
    after = trainer.evaluate()["eval_loss"]
    trainer.model.save_pretrained(str(out / "model"), safe_serialization=True)
    tokenizer.save_pretrained(str(out / "model"))
    wall = time.perf_counter() - started
    half = steps // 2
    return {"wall_s": wall, "ms_per_step": 1000 * (marks[steps] - marks[half]) / (steps - half),
            "train_loss": result.training_loss, "eval_loss_start": before, "eval_loss_end": after}


def cpu_context(stage_name: str, work: Path, seed: int):
    """The run context both lmforge benchmarks give a stage: fp32 on the CPU, the benchmark's seed, quiet."""
    return lmforge.RunContext(stage_name=stage_name, quiet=True, seed=seed, work_dir=work,
                              hardware=lmforge.Hardware(device="cpu", precision="fp32"))


def timed_stage(stage, inputs: dict, steps: int, out: Path, seed: int) -> dict:
    """``lmforge.run_stage`` timed like the plain scripts: the whole call, ms/step over the second half of the
    steps (between its step-N/2 and step-N log lines), and the stage's logged metrics."""
    context = cpu_context(stage.kind, out / "work", seed)
    clock = StepClock()
    lmforge.register_plugin(clock)
    started = time.perf_counter()
    try:
        lmforge.run_stage(stage, inputs, out / "model", context)
    finally:
        lmforge.unregister_plugin(clock)
    wall = time.perf_counter() - started
    metrics = {}
    for line in (out / "model" / "metrics.jsonl").read_text().splitlines():
        metrics.update({k: v for k, v in json.loads(line).items() if v is not None})
    half = steps // 2
    return {"wall_s": wall, "ms_per_step": 1000 * (clock.marks[steps] - clock.marks[half]) / (steps - half),
            "metrics": metrics}


def sft_stage(steps: int):
    return lmforge.registry().get("finetuner", "sft")(
        max_steps=steps, batch_size=SETTINGS["batch_size"], learning_rate=SETTINGS["learning_rate"],
        lr_scheduler=SETTINGS["lr_scheduler"], warmup_steps=SETTINGS["warmup_steps"],
        weight_decay=SETTINGS["weight_decay"], max_length=SETTINGS["max_length"], save_steps=0,
        logging_steps=steps // 2, system_prompt=SYSTEM, placeholders=PLACEHOLDERS)


def lmforge_sft(base: Path, train: Path, held: Path, steps: int, out: Path) -> dict:
    """``lmforge.run_stage`` of the sft finetuner with the same settings, timed the same way."""
    run = timed_stage(sft_stage(steps), {"model": base, "data": train, "eval_data": held}, steps, out,
                      SETTINGS["seed"])
    metrics = run.pop("metrics")
    return {**run, "train_loss": metrics.get("train_loss"), "eval_loss_start": metrics.get("eval_loss_start"),
            "eval_loss_end": metrics.get("eval_loss_end")}


def lmforge_args(base: Path, train: Path, held: Path, steps: int, work: Path):
    """The ``TrainingArguments`` lmforge's stage builds (its own ``build_trainer``), for the field-by-field check."""
    from lmforge.plugins.finetuners.sft import build_trainer

    inputs = {"model": base, "data": train, "eval_data": held}
    return build_trainer(sft_stage(steps).config, inputs, cpu_context("finetuner", work, SETTINGS["seed"]))[0].args


def differences(a, b) -> dict:
    """Fields of two ``TrainingArguments`` that differ, paths and run names aside."""
    skip = {"output_dir", "logging_dir", "run_name", "hub_model_id"}
    left, right = a.to_dict(), b.to_dict()
    return {k: [left.get(k), right.get(k)] for k in sorted(set(left) | set(right))
            if k not in skip and left.get(k) != right.get(k)}


def bench_parser(doc: str, bench: str) -> argparse.ArgumentParser:
    """The options both trainer benchmarks take."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="training steps per run (even; the 2nd half is timed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help=f"raw result file (default: results/{bench}_<date>.json)")
    return parser


def start(parser: argparse.ArgumentParser, argv, bench: str):
    """The parsed options and the result recorder, torch imported and its threads set before any timing."""
    args = parser.parse_args(argv)
    if args.steps < 2 or args.steps % 2:
        parser.error("--steps: an even number of at least 2")
    import torch

    torch.set_num_threads(args.threads)
    return args, Recorder(bench, packages=("lmforge", "torch", "transformers", "trl", "datasets", "accelerate"))


def main(argv=None) -> None:
    parser = bench_parser(__doc__, "finetuner")
    parser.add_argument("--trl-defaults", action="store_true",
                        help="also run the plain script with TRL's own SFTConfig defaults for bf16 and gradient "
                             "checkpointing (both on), which lmforge turns off on a CPU")
    args, recorder = start(parser, argv, "finetuner")
    work = Path(tempfile.mkdtemp(prefix="bench-finetuner-"))
    base, train, held = prepare(work)
    keep: dict = {}
    runs = itertools.count()
    contenders = {
        "plain TRL": lambda: plain_trl(base, train, held, args.steps, work / f"plain-{next(runs)}", keep),
        "lmforge sft": lambda: lmforge_sft(base, train, held, args.steps, work / f"lmforge-{next(runs)}"),
    }
    if args.trl_defaults:
        contenders["plain TRL, its defaults"] = lambda: plain_trl(base, train, held, args.steps,
                                                                  work / f"defaults-{next(runs)}", keep, True)
    results = interleaved(contenders, args.rounds, log=None)
    diff = differences(lmforge_args(base, train, held, args.steps, work / "args"), keep["args"])
    summary = {}
    for name, rounds in results.items():
        summary[name] = {key: median([r[key] for r in rounds]) for key in rounds[0]}
    for key in ("wall_s", "ms_per_step"):
        summary[f"ratio_{key}"] = summary["lmforge sft"][key] / summary["plain TRL"][key]
    width = max(map(len, results))
    print(f"{args.rounds} rounds x {args.steps} steps, batch {SETTINGS['batch_size']}, "
          f"{args.threads} thread(s); medians")
    print(f"{'':{width}}  {'wall s':>7}  {'ms/step':>8}  {'train loss':>10}  {'eval loss':>15}")
    for name in results:
        s = summary[name]
        print(f"{name:{width}}  {s['wall_s']:7.1f}  {s['ms_per_step']:8.1f}  {s['train_loss']:10.4f}  "
              f"{s['eval_loss_start']:.4f} -> {s['eval_loss_end']:.4f}")
    print(f"lmforge / plain: wall {summary['ratio_wall_s']:.3f}, ms/step {summary['ratio_ms_per_step']:.3f}")
    print("TrainingArguments differences (lmforge, plain):", diff or "none")
    settings = {**SETTINGS, "rounds": args.rounds, "steps": args.steps, "threads": args.threads,
                "model": "model=small, random init (seed 0)", "tokenizer": "bpe 2048 on the bundled raw_text",
                "train_chats": len(train.read_text().splitlines()), "eval_chats": EVAL_ROWS,
                "system_prompt": SYSTEM, "placeholders": PLACEHOLDERS}
    found = {"rounds": results, "medians": summary, "args_differences": diff}
    if args.trl_defaults:
        found["trl_defaults_differences"] = differences(keep["args"], keep["defaults"])
        print("the plain script with TRL's defaults differs in:", found["trl_defaults_differences"])
    recorder.write(settings, found, args.out)


if __name__ == "__main__":
    main()
