"""Regenerate the bundled preference pairs (core/sample_data/preferences.jsonl) from a fine-tuned model.

Made the way the RLHF documents describe: the SFT model samples several answers per prompt and a judge
ranks them; the best and the worst answer of a prompt become a (chosen, rejected) pair when the judge tells
them apart. The prompts are the fine-tuning questions (same domain as the SFT data, none of the held-out
prompts); the judge is the reference rule judge of plugins/stage_effects.py (right answer word, ended its
turn, about what was asked, fluent: words the chat data uses, not repetitive, short). The ranking UI's export (plugins/feedback/rank.py) can replace this judge.

    lmforge run run.name=prefs pipeline.stages.aligner=null ...   # or any run with a finetuner artifact
    python benchmarks/make_preferences.py --model runs/default/finetuner [--samples 6 --temperatures 1.0,1.3]

Samples are drawn at each of ``--temperatures`` (6 each by default): the low temperature gives the model's
good answers, the high one its typical failures (made-up words, wrong subject), so the judge's best and worst
differ visibly. The reward model learns that difference (held-out accuracy 0.85 vs 0.66 with 1.0 alone, in
the measurements in docs/stages/aligner.md), and the aligner's chosen answers stay the model's best ones.

The prompts carry the sampler's system prompt, as the fine-tuning data does, so the reward model and the
aligner see the same conversations the sampler will produce.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "You are Forge, a small assistant made by the lmforge project."


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a fine-tuned model dir (the finetuner artifact)")
    parser.add_argument("--sft", type=Path, default=REPO / "core" / "sample_data" / "sft.jsonl")
    parser.add_argument("--out", type=Path, default=REPO / "core" / "sample_data" / "preferences.jsonl")
    parser.add_argument("--prompts", type=int, default=600, help="distinct fine-tuning questions to sample")
    parser.add_argument("--samples", type=int, default=6, help="samples per prompt at each temperature")
    parser.add_argument("--temperatures", default="1.0,1.3", help="comma-separated sampling temperatures")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--system-prompt", default=SYSTEM)
    parser.add_argument("--name", default="Forge")
    parser.add_argument("--author", default="the lmforge project")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from lmforge.plugins.common import seed_everything
    from lmforge.plugins.models import load_causal_lm, load_tokenizer
    from lmforge.plugins.samplers.hf_generate import GenerateParams, sample
    from lmforge.plugins.stage_effects import fill_placeholders, known_words, reference_score
    from lmforge.stages import RunContext

    placeholders = {"name": args.name, "author": args.author}
    vocabulary = known_words(args.sft, placeholders)
    seen, items = set(), []
    for line in args.sft.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        question, answer = messages[0]["content"], fill_placeholders(messages[-1]["content"], placeholders)
        if question not in seen:
            seen.add(question)
            items.append((question, answer))
    rng = random.Random(args.seed)
    rng.shuffle(items)
    items = items[: args.prompts]
    seed_everything(args.seed)
    context = RunContext(stage_name="preferences", quiet=True)
    model = load_causal_lm(args.model, context, inference=True).eval()
    tokenizer = load_tokenizer(args.model)
    rows = []
    for temperature in (float(t) for t in args.temperatures.split(",")):
        params = GenerateParams(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, n=args.samples,
                                max_new_tokens=args.max_new_tokens, batch_size=32, system_prompt=args.system_prompt)
        rows += sample(model, tokenizer, [[{"role": "user", "content": q}] for q, _ in items], params, progress=True)
    by_prompt: dict[int, list[tuple[float, str]]] = {}
    for row in rows:
        question, reference = items[row["index"]]
        score = reference_score(row["completion"], reference, question, row["finish_reason"] == "stop", vocabulary)
        by_prompt.setdefault(row["index"], []).append((score, row["completion"]))
    pairs = []
    for index, scored in sorted(by_prompt.items()):
        scored.sort(key=lambda s: -s[0])
        (best, chosen), (worst, rejected) = scored[0], scored[-1]
        if best > worst and chosen.strip() and chosen != rejected:
            system = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
            pairs.append({"prompt": system + [{"role": "user", "content": items[index][0]}],
                          "chosen": [{"role": "assistant", "content": chosen}],
                          "rejected": [{"role": "assistant", "content": rejected}],
                          "scores": [round(best, 3), round(worst, 3)]})
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
    print(f"{args.out}: {len(pairs)} pairs from {len(items)} prompts x {args.samples} samples x "
          f"{args.temperatures}", file=sys.stderr)


if __name__ == "__main__":
    main()
