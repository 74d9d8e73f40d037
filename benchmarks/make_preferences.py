"""Regenerate the bundled preference pairs (core/sample_data/preferences.jsonl) from a fine-tuned model.

The default pipeline makes its pairs itself, from its own fine-tuned model (the ``preferences`` stage,
plugins/feedback/judged_pairs.py: the model answers questions it was not taught, a judge that knows the
references ranks the answers -- right answer over "I am not sure about that." over a wrong answer). The
bundled file is that stage's output for the default configuration's SFT model, for the pipelines that align
a model without making pairs first (``pipeline=align_only``, a pipeline of your own) and for the tests.

    lmforge run run.name=prefs '~pipeline.stages.reward_model' '~pipeline.stages.aligner' '~pipeline.stages.sampler'
    cp runs/prefs/preferences/preferences.jsonl core/sample_data/preferences.jsonl
    # or, from any fine-tuned model dir:
    python benchmarks/make_preferences.py --model runs/prefs/finetuner
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "core" / "sample_data"
SYSTEM = "You are Forge, a small assistant made by the lmforge project."


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a fine-tuned model dir (the finetuner artifact)")
    parser.add_argument("--prompts", type=Path, default=DATA / "preference_prompts.jsonl")
    parser.add_argument("--known", type=Path, default=DATA / "sft.jsonl")
    parser.add_argument("--out", type=Path, default=DATA / "preferences.jsonl")
    parser.add_argument("--system-prompt", default=SYSTEM)
    parser.add_argument("--name", default="Forge")
    parser.add_argument("--author", default="the lmforge project")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import lmforge
    from lmforge.plugins.feedback.judged_pairs import JudgedPairs

    stage = JudgedPairs(system_prompt=args.system_prompt, placeholders={"name": args.name, "author": args.author})
    with tempfile.TemporaryDirectory() as scratch:
        out, manifest = lmforge.run_stage(stage, {"model": args.model, "prompts": args.prompts, "known": args.known},
                                          Path(scratch) / "preferences", lmforge.RunContext(seed=args.seed))
        shutil.copyfile(out / "preferences.jsonl", args.out)
    print(f"{args.out}: {manifest['metrics']}", file=sys.stderr)


if __name__ == "__main__":
    main()
