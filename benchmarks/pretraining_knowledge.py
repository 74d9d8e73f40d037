"""Does the default model learn the held-out facts from its pretraining text, and does fine-tuning keep them?

    python benchmarks/pretraining_knowledge.py [--fact-rounds 16 64] [--where DIR]

The held-out prompts ask facts that no fine-tuning chat or preference question asks; the pretraining text states
every fact as a sentence (``--fact-rounds`` times, benchmarks/make_sample_data.py). For each number of rounds this
regenerates the pretraining text (the bundled web text plus the facts; the chat data comes out the same), runs the
default cleaner, tokenizer and pretrainer on it, then fine-tunes the base model three times on the bundled chats --
the default full SFT, LoRA (``finetuner=sft_lora`` with the default run's steps, batch and length) and LoRA for
twice the steps at half the learning rate (``lora_long``) -- and records:

- ``as_text``: held-out facts the model completes right as plain text (the reference up to its answer,
  "The opposite of wide is", continued greedily; right when the continuation starts with the answer), for
  the base model and both fine-tuned models: what each model knows;
- ``answers``: right / not sure / wrong of the fine-tuned models' greedy answers to the held-out questions (the
  report's judge): what each model can say when asked.

One seed (``run.seed=0``); a question of whether knowledge gets from pretraining to answers at all, not a
comparison of settings. Writes benchmarks/results/pretraining_knowledge_<date>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import Recorder
from lmforge.config import sample_data_path
from lmforge.plugins.evaluators.stage_effects import known_as_text, load_eval_prompts, verdict_counts
from lmforge.plugins.lib.models import load_tokenizer
from transformers import AutoModelForCausalLM

HERE = Path(__file__).resolve().parent
SYSTEM = "You are Forge, a small assistant made by the lmforge project."
# the default pipeline's chat settings (conf/pipeline/full.yaml), which pipeline=sft_only leaves out
CHAT = ["+finetuner.system_prompt='You are {{name}}, a small assistant made by {{author}}.'",
        "+finetuner.placeholders={name: Forge, author: the lmforge project}", f"sampler.system_prompt='{SYSTEM}'"]
LORA = ["finetuner=sft_lora", "finetuner.max_steps=600", "finetuner.batch_size=16", "finetuner.max_length=128",
        "finetuner.save_steps=200"]
LORA_LONG = [LORA[0], "finetuner.max_steps=1200", "finetuner.learning_rate=1e-3", *LORA[2:]]


def pretraining_text(rounds: int, out: Path) -> Path:
    """The bundled pretraining text with the facts written ``rounds`` times (make_sample_data.py into ``out``)."""
    spec = importlib.util.spec_from_file_location("make_sample_data", HERE / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--fact-rounds", str(rounds), "--out", str(out)])
    return out / "raw_text.jsonl"


def lmforge(*overrides: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "lmforge.cli", "run", "run.quiet=true", "evaluation.pretrainer=[]",
                    *overrides], env=env, check=True)


def facts_known(model_dir: Path, facts: list[tuple[str, str]]) -> list[bool | None]:
    """Per (reference, question) fact, whether the model completes it right as plain text, greedily, from the
    reference up to its answer: the ``answers`` evaluator's ``known_as_text`` probe."""
    tokenizer, model = load_tokenizer(str(model_dir)), AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return known_as_text(model, tokenizer, facts)


def facts_as_text(model_dir: Path, facts: list[tuple[str, str]]) -> int:
    """How many facts the model completes right as plain text (``facts_known``)."""
    return sum(bool(known) for known in facts_known(model_dir, facts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fact-rounds", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--where", type=Path, help="run here (default: a temporary directory)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    recorder = Recorder("pretraining_knowledge", packages=("lmforge", "torch", "transformers", "trl", "peft"))
    where = args.where or Path(tempfile.mkdtemp(prefix="pretraining_knowledge_"))
    held = [p for p in load_eval_prompts(sample_data_path("prompts.jsonl")) if p["held_out"] and p["reference"]]
    references = [(p["reference"], p["messages"][-1]["content"]) for p in held]
    results = {}
    for rounds in args.fact_rounds:
        root = where / f"rounds{rounds}"
        text = pretraining_text(rounds, root / "data")
        print(f"{rounds} fact rounds: pretraining", flush=True)
        lmforge("pipeline=pretrain_only", f"data.raw_text={text}", f"run.root={root}", "run.name=base")
        base = root / "base" / "pretrainer"
        docs = json.loads((root / "base" / "cleaner" / "report.json").read_text())
        result = {"documents_in": docs["docs_in"], "documents_kept": docs["docs_out"],
                  "as_text": {"base": facts_as_text(base, references)}, "answers": {}}
        for name, extra in (("full", []), ("lora", LORA), ("lora_long", LORA_LONG)):
            print(f"{rounds} fact rounds: SFT {name}", flush=True)
            lmforge("pipeline=sft_only", f"pipeline.stages.finetuner.model={base}", f"run.root={root}",
                    f"run.name=sft_{name}", "evaluation.finetuner=[{name: answers}]", *CHAT, *extra)
            sft = root / f"sft_{name}" / "finetuner"
            rows = [json.loads(line) for line in (sft / "answers.jsonl").read_text().splitlines() if line]
            held_rows = [r for r in rows if r["held_out"]]
            result["as_text"][f"sft_{name}"] = facts_as_text(sft, references)
            result["answers"][f"sft_{name}"] = {**verdict_counts(held_rows),
                                                "right_answers": [r["answer"] for r in held_rows if r["correct"]]}
        results[f"fact_rounds_{rounds}"] = result
        print(f"{rounds} fact rounds: {json.dumps(result)}", flush=True)
    recorder.write({"fact_rounds": args.fact_rounds, "held_out_facts": len(references), "lora": LORA,
                    "lora_long": LORA_LONG, "seed": 0}, results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
