"""What the default pipeline's alignment does to held-out answers, over several seeds, item by item.

    python benchmarks/default_run_seeds.py --seeds 0 1 2 3 4 [--where DIR] [overrides …]
    python benchmarks/default_run_seeds.py --collect LABEL=RUN_DIR [LABEL=RUN_DIR …]   # runs made already
    … --taught 300   # each run's two chat models also answer 300 questions of the SFT data (taught_answers.py)
    … --as-text      # and how many held-out facts the base, SFT and aligned models complete as plain text

The first form runs ``lmforge run run.seed=K`` (the bundled data, CPU, ``OMP_NUM_THREADS=1``) for each seed in
``--where`` (default: a temporary directory); the second reads finished run directories (``<root>/default``).
For every run it records the held-out greedy answers' right / not sure / wrong counts of the fine-tuned
(``finetuner``) and the aligned (``aligner``) model, the reward model's accuracy on pairs of held-out prompts,
the win rate, and item by item what alignment did to the answers the fine-tuned model had right: kept, lost,
and the ones it gained. The totals over seeds are what is compared: one run's "right" counts are one or two
guessed sums, and a single seed says little. With ``--taught N`` each run's fine-tuned and aligned models also
answer N questions the SFT data taught (the same questions for every run), so what alignment keeps of what the
model knew is counted beside what it does where it knows nothing. With ``--as-text`` the base, fine-tuned and
aligned models also complete each held-out fact's reference from the text before its answer
(``pretraining_knowledge.facts_known``): what each model knows, whether or not it says it, and the chat models'
right / not sure / wrong answers to the facts they complete (``answers_to_known``). A run made
without the reward model stage records no reward-model accuracy or win rate. Writes
benchmarks/results/default_run_seeds_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import Recorder
from lmforge.config import sample_data_path
from lmforge.plugins.evaluators.stage_effects import VERDICTS, load_eval_prompts, taught_questions, verdict
from pretraining_knowledge import facts_known
from taught_answers import PLACEHOLDERS, verdicts

COUNTS = ("right", "not_sure", "wrong", "n")
MODELS = ("pretrainer", "finetuner", "aligner")


def answers(run: Path, stage: str) -> list[dict]:
    return [json.loads(line) for line in (run / stage / "answers.jsonl").read_text().splitlines() if line.strip()]


def one_run(run: Path, taught: list[tuple[str, str]], references: list[tuple[str, str]]) -> dict:
    """The numbers of one finished run directory (``<root>/<name>``); ``taught``: (question, answer) pairs to ask;
    ``references``: held-out (reference, question) facts to complete as text (none: not measured)."""
    metrics = {stage: json.loads((run / stage / "manifest.json").read_text())["metrics"]
               for stage in ("finetuner", "reward_model", "aligner") if (run / stage / "manifest.json").exists()}
    sft, aligned = answers(run, "finetuner"), answers(run, "aligner")
    items = [(a["prompt"], bool(a["correct"]), bool(b["correct"]), a["answer"], b["answer"])
             for a, b in zip(sft, aligned) if a["held_out"] and a.get("reference")]
    config = json.loads((run / "config.json").read_text())
    return {
        "run": str(run), "seed": config["run"]["seed"], "pretraining_text": config.get("data", {}).get("raw_text"),
        "finetuner_config": config.get("finetuner"), "preferences_config": config.get("preferences"),
        "aligner_config": config.get("aligner"),
        "finetuner": {k: metrics["finetuner"][f"eval/answers/{k}"] for k in COUNTS},
        "aligner": {k: metrics["aligner"][f"eval/answers/{k}"] for k in COUNTS},
        "reward_model_accuracy": metrics.get("reward_model", {}).get("eval_accuracy"),
        "win_rate": metrics["aligner"].get("eval/win_rate/win_rate"),
        "sft_right_kept": [p for p, s, a, *_ in items if s and a],
        "sft_right_lost": [{"prompt": p, "sft": x, "aligned": y} for p, s, a, x, y in items if s and not a],
        "gained": [{"prompt": p, "sft": x, "aligned": y} for p, s, a, x, y in items if a and not s],
        **({"taught": taught_counts(run, taught)} if taught else {}),
        **(as_text(run, references) if references else {}),
    }


def as_text(run: Path, references: list[tuple[str, str]]) -> dict:
    """Held-out facts each model of a run completes as plain text and, for the chat models, the verdicts of their
    greedy answers to those facts: does a model answer, hedge or get wrong what it knows?"""
    known = {stage: facts_known(run / stage, references) for stage in MODELS if (run / stage).is_dir()}
    out = {"as_text": {stage: sum(bool(k) for k in flags) for stage, flags in known.items()},
           "as_text_of": len(references), "answers_to_known": {}}
    for stage in ("finetuner", "aligner"):
        if stage in known:
            rows = {r["prompt"]: r for r in answers(run, stage)}
            asked = [rows[question] for (_, question), k in zip(references, known[stage]) if k and question in rows]
            out["answers_to_known"][stage] = {v: sum(verdict(r) == v for r in asked) for v in VERDICTS}
    return out


def taught_counts(run: Path, taught: list[tuple[str, str]]) -> dict:
    """Right / not sure / wrong of both chat models on the taught questions, and the right answers alignment lost."""
    before, after = verdicts(str(run / "finetuner"), taught), verdicts(str(run / "aligner"), taught)
    count = {stage: {v: sum(x[0] == v for x in got) for v in ("right", "not_sure", "wrong")}
             for stage, got in (("finetuner", before), ("aligner", after))}
    count["right_lost_to"] = {v: sum(a[0] == "right" and b[0] == v for a, b in zip(before, after))
                              for v in ("not_sure", "wrong")}
    return count


def totals(runs: list[dict]) -> dict:
    out = {stage: {k: sum(r[stage][k] for r in runs) for k in COUNTS} for stage in ("finetuner", "aligner")}
    out["sft_right_kept"] = sum(len(r["sft_right_kept"]) for r in runs)
    out["sft_right_lost"] = sum(len(r["sft_right_lost"]) for r in runs)
    out["gained"] = sum(len(r["gained"]) for r in runs)
    out["runs"] = len(runs)
    out["aligned_right_at_least_sft_in"] = sum(r["aligner"]["right"] >= r["finetuner"]["right"] for r in runs)
    out["aligned_wrong_lower_in"] = sum(r["aligner"]["wrong"] < r["finetuner"]["wrong"] for r in runs)
    if all("as_text" in r for r in runs):
        out["as_text"] = {stage: sum(r["as_text"].get(stage, 0) for r in runs) for stage in MODELS}
        out["answers_to_known"] = {stage: {v: sum(r["answers_to_known"].get(stage, {}).get(v, 0) for r in runs)
                                           for v in VERDICTS} for stage in ("finetuner", "aligner")}
    if all("taught" in r for r in runs):
        out["taught"] = {stage: {v: sum(r["taught"][stage][v] for r in runs) for v in ("right", "not_sure", "wrong")}
                         for stage in ("finetuner", "aligner")}
        out["taught"]["right_lost_to"] = {v: sum(r["taught"]["right_lost_to"][v] for r in runs)
                                          for v in ("not_sure", "wrong")}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[])
    parser.add_argument("--where", type=Path, help="run here (default: a temporary directory)")
    parser.add_argument("--collect", nargs="*", default=[], metavar="LABEL=RUN_DIR",
                        help="finished run directories to read instead of running")
    parser.add_argument("--out", type=Path, help="raw result file (default: results/default_run_seeds_<date>.json)")
    parser.add_argument("--taught", type=int, default=0, metavar="N",
                        help="also ask both chat models N questions of the SFT data (default: none)")
    parser.add_argument("--as-text", action="store_true",
                        help="also count the held-out facts the base, SFT and aligned models complete as text")
    parser.add_argument("overrides", nargs="*", help="extra `lmforge run` overrides for every seed")
    args = parser.parse_args()
    if not args.seeds and not args.collect:
        parser.error("give --seeds or --collect")
    recorder = Recorder("default_run_seeds", packages=("lmforge", "torch", "transformers", "trl"))
    taught = taught_questions(str(sample_data_path("sft.jsonl")), args.taught, 1, PLACEHOLDERS) if args.taught else []
    references = [(p["reference"], p["messages"][-1]["content"]) for p in load_eval_prompts(
        sample_data_path("prompts.jsonl")) if p["held_out"] and p["reference"]] if args.as_text else []
    groups: dict[str, list[dict]] = {}
    for item in args.collect:
        label, _, directory = item.partition("=")
        if not directory:
            parser.error(f"--collect {item}: expected LABEL=RUN_DIR")
        groups.setdefault(label, []).append(one_run(Path(directory), taught, references))
    if args.seeds:
        where = args.where or Path(tempfile.mkdtemp(prefix="default_run_seeds_"))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        for seed in args.seeds:
            root = where / f"seed{seed}"
            command = [sys.executable, "-m", "lmforge.cli", "run", f"run.root={root}", "run.quiet=true",
                       f"run.seed={seed}", *args.overrides]
            print(f"seed {seed}: {' '.join(command[2:])}", flush=True)
            subprocess.run(command, env=env, check=True)
            label = " ".join(args.overrides) or "default"
            groups.setdefault(label, []).append(one_run(root / "default", taught, references))
    results = {label: {"totals": totals(runs), "runs": runs} for label, runs in groups.items()}
    for label, result in results.items():
        t = result["totals"]
        print(f"{label}: {t['runs']} runs; SFT right/not sure/wrong {t['finetuner']['right']}/"
              f"{t['finetuner']['not_sure']}/{t['finetuner']['wrong']} -> aligned {t['aligner']['right']}/"
              f"{t['aligner']['not_sure']}/{t['aligner']['wrong']}; SFT's right kept {t['sft_right_kept']}, "
              f"lost {t['sft_right_lost']}, gained {t['gained']}" +
              (f"; taught right {t['taught']['finetuner']['right']} -> {t['taught']['aligner']['right']}"
               if "taught" in t else ""))
    recorder.write({"seeds": args.seeds, "overrides": args.overrides, "collect": args.collect,
                    "taught": args.taught, "as_text": args.as_text}, results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
