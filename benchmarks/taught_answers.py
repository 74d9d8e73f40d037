"""Does alignment keep what fine-tuning taught? Greedy answers of two chat models to questions of the SFT data.

    python benchmarks/taught_answers.py --before runs/default/finetuner --after runs/default/aligner [--n 300]

The held-out counts in the run report say what a model does on questions nobody taught it; this asks ``--n``
questions the SFT data did teach (single-turn chats of core/sample_data/sft.jsonl, drawn with ``--seed``), greedily,
with the default system prompt, and judges them with the report's rule judge against the taught answer. It
records both models' right / not sure / wrong and the table of verdict before x after, so "the aligned model
hedges on N questions it answered right" is a count, not an impression. Writes
benchmarks/results/taught_answers_<date>.json.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from _results import Recorder
from lmforge.config import sample_data_path
from lmforge.plugins.evaluators.stage_effects import VERDICTS, is_correct, taught_questions, verdict
from lmforge.plugins.lib.generation import GenerateConfig, sample
from lmforge.plugins.lib.models import load_tokenizer
from transformers import AutoModelForCausalLM

SYSTEM = "You are Forge, a small assistant made by the lmforge project."
PLACEHOLDERS = {"name": "Forge", "author": "the lmforge project"}


def verdicts(model_dir: str, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(verdict, greedy answer) per question."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    params = GenerateConfig(do_sample=False, n=1, max_new_tokens=40, batch_size=64, system_prompt=SYSTEM)
    rows = sample(model, load_tokenizer(model_dir), [[{"role": "user", "content": q}] for q, _ in items], params)
    answers = {row["index"]: row["completion"] for row in rows}
    return [(verdict({"answer": answers[index], "correct": is_correct(answers[index], reference, question)}),
             answers[index]) for index, (question, reference) in enumerate(items)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the fine-tuned model (finetuner artifact)")
    parser.add_argument("--after", required=True, help="the aligned model (aligner artifact)")
    parser.add_argument("--data", default=str(sample_data_path("sft.jsonl")), help="the SFT chats")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    recorder = Recorder("taught_answers", packages=("lmforge", "torch", "transformers"))
    items = taught_questions(args.data, args.n, args.seed, PLACEHOLDERS)
    before, after = verdicts(args.before, items), verdicts(args.after, items)
    table = {first: {then: sum(a[0] == first and b[0] == then for a, b in zip(before, after)) for then in VERDICTS}
             for first in VERDICTS}
    counts = {"before": dict(Counter(v for v, _ in before)), "after": dict(Counter(v for v, _ in after))}
    changed = [{"question": q, "before": a[1], "after": b[1]} for (q, _), a, b in zip(items, before, after)
               if a[0] == "right" and b[0] != "right"]
    print(f"{len(items)} taught questions: right {counts['before'].get('right', 0)} -> "
          f"{counts['after'].get('right', 0)}; before x after: {table}")
    recorder.write({"before": args.before, "after": args.after, "data": args.data, "n": args.n, "seed": args.seed,
                    "system_prompt": SYSTEM}, {"questions": len(items), "counts": counts, "before_x_after": table,
                                              "right_lost": changed}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
