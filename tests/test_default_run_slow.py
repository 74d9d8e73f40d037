"""The real default pipeline, as `lmforge run` runs it (the installed command, from an empty directory), the
numbers that say each stage worked, and the aligned model loading and generating with plain transformers.

Slow (four to five minutes on two idle CPU cores, far longer on busy ones): CI runs it. The thresholds are below the numbers measured
(docs/quickstart.md) so that they hold run to run; the numbers it reaches are printed (pytest -s) and are in
the run's manifests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.slow


COUNTS = ("eval/answers/right", "eval/answers/not_sure", "eval/answers/wrong", "eval/answers/n",
          "eval/answers/known_as_text")
RM_ACCURACY = 0.58  # measured 0.75 on 114 pairs of prompts it never saw (0.70-0.75 over five seeds)


def _metrics(run_dir, stage):
    return json.loads((run_dir / stage / "manifest.json").read_text())["metrics"]


def test_default_run_yields_a_model_that_visibly_works(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the user's default threads
    started = time.perf_counter()
    command = Path(sys.executable).with_name("lmforge")  # the console script the install put beside python
    proc = subprocess.run([str(command) if command.exists() else "lmforge", "run", "run.quiet=true"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500, check=False)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "default"
    base, sft, rm, aligned = (_metrics(run, s) for s in ("pretrainer", "finetuner", "reward_model", "aligner"))
    numbers = {"seconds": round(seconds), "base_val_loss": base["eval_loss"],
               "base_bits_per_byte": base["bits_per_byte"], "base_alpha_words": base["eval/answers/alpha_words"],
               "base_known_as_text": base["eval/answers/known_as_text"],
               "sft_val_loss": sft["eval_loss"], "sft_identity": sft["eval/answers/identity"],
               "rm_accuracy": rm["eval_accuracy"],
               **{"sft_" + k.removeprefix("eval/answers/"): sft[k] for k in COUNTS},
               **{"aligned_" + k.removeprefix("eval/answers/"): v for k, v in aligned.items()
                  if k.startswith("eval/answers/")},
               "win_rate": aligned["eval/win_rate/win_rate"]}
    print("default run:", json.dumps(numbers))
    # the base model continues with English words, not digit soup
    assert base["eval/answers/alpha_words"] >= 0.6
    # fine-tuning made an assistant: it ends its turns, in English, and its held-out loss fell
    assert sft["eval_loss"] < base["eval_loss"]
    assert sft["eval/answers/ends_turn"] >= 0.9 and sft["eval/answers/english"] >= 0.8
    # the reward model learnt the judge's preferences on pairs of prompts it never saw (chance is 0.5)
    assert rm["eval_accuracy"] >= RM_ACCURACY
    # every answer row says whether its prompt is held out; the held-out ones are the bundled facts
    run_prompts = [json.loads(line) for line in (run / "aligner" / "answers.jsonl").read_text().splitlines()]
    assert run_prompts and all(isinstance(r["held_out"], bool) for r in run_prompts)
    assert {r["kind"] for r in run_prompts if not r["held_out"]} == {"identity", "chat"}
    held_n = sum(r["held_out"] for r in run_prompts)
    assert sft["eval/answers/n"] == aligned["eval/answers/n"] == held_n
    # alignment trades wrong answers for "I am not sure" on the held-out prompts (measured of 52: wrong 46 -> 30,
    # not sure 5 -> 21); its right answers are guessed sums it may lose (seed 0: 1 -> 1; over five seeds 8 -> 4,
    # docs/quickstart.md), so one answer of slack
    assert aligned["eval/answers/right"] >= sft["eval/answers/right"] - 1
    assert aligned["eval/answers/wrong"] <= sft["eval/answers/wrong"] - 8
    assert aligned["eval/answers/not_sure"] >= sft["eval/answers/not_sure"] + 8
    assert aligned["eval/answers/ends_turn"] >= 0.9 and aligned["eval/answers/english"] >= 0.8
    assert aligned["eval/answers/identity"] >= 0.5
    # both chat models are asked 100 questions of the SFT data: the SFT model learnt them, and the report says what
    # alignment kept (it hedges on some: docs/quickstart.md)
    assert sft["eval/answers/taught_n"] == aligned["eval/answers/taught_n"] == 100
    assert sft["eval/answers/taught_right"] >= 85 and aligned["eval/answers/taught_right"] >= 70
    # the report leads with what the models answer; the win rate's judge learned from the aligner's own pairs
    report = (run / "report.md").read_text()
    assert report.index("## What the models answer") < report.index("## What each stage did")
    assert "| finetuner | " in report and "| aligner | " in report and "**Not independent**" in report
    assert "| Who are you? *(trained)* |" in report
    assert "taught questions right |" in report and "- **aligner** on 100 questions of the fine-tuning data" in report
    # what each model knows as text beside what it answers (the base model completes a few held-out facts; the
    # chat models next to none: docs/quickstart.md)
    assert all(m["eval/answers/known_as_text_n"] == held_n for m in (base, sft, aligned))  # every fact probed
    assert base["eval/answers/known_as_text"] >= 1  # measured 4 (seed 0; 1-4 over five seeds)
    assert "eval/answers/known_right" in aligned and "eval/answers/known_right" not in base
    assert "- **Known as text**: held-out facts each model completes as plain text" in report
    assert json.loads((run / "aligner" / "win_rate.json").read_text())["independent"] is False

    # the aligned model is a plain transformers model: loads and generates outside lmforge
    tokenizer = AutoTokenizer.from_pretrained(run / "aligner")
    model = AutoModelForCausalLM.from_pretrained(run / "aligner")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    encoded = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**encoded, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > encoded["input_ids"].shape[1]
    print("aligned model, plain transformers:", repr(tokenizer.decode(out[0][encoded["input_ids"].shape[1]:])))
