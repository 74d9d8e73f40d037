"""Evaluators: perplexity tracks training, win rate is judged by a reward model, GSM8K scoring is exact."""

from __future__ import annotations

import json
import math

import lmforge
import pytest


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, tiny_tokenizer_dir, tiny_context):
    from lmforge.plugins.pretrainers.hf_trainer import build_model_config
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    config = build_model_config(tiny_context.model, tokenizer)
    config.num_labels = 1
    out = tmp_path_factory.mktemp("rm") / "reward_model"
    AutoModelForSequenceClassification.from_config(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def test_perplexity_matches_loss_and_drops_after_training(tiny_model_dir, tiny_context, tmp_path):
    from lmforge.plugins.evaluators import Perplexity
    from lmforge.plugins.pretrainers.hf_trainer import HFTrainerPretrainer

    held_out = tmp_path / "held_out.jsonl"
    lines = open(lmforge.sample_data_path("raw_text.jsonl")).read().splitlines()  # noqa: SIM115
    texts = [json.loads(x)["text"] for x in lines]
    held_out.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[-8:]))
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:-8]))
    evaluator = Perplexity(text=str(held_out), max_documents=8)
    before = evaluator.evaluate(tiny_model_dir, {}, tiny_context)
    assert math.isclose(before["perplexity"], math.exp(before["loss"]), rel_tol=1e-6)
    trained = tmp_path / "trained"
    context = lmforge.RunContext(hardware=tiny_context.hardware, quiet=True, model=tiny_context.model,
                                 work_dir=tmp_path / "work")
    lmforge.run_stage(HFTrainerPretrainer(max_steps=40, save_steps=0, logging_steps=10, learning_rate=3e-3,
                                                          warmup_steps=5),
                      {"text": str(train), "tokenizer": str(tiny_model_dir)}, trained, context)
    after = evaluator.evaluate(trained, {}, tiny_context)
    assert after["loss"] < before["loss"] - 0.3 and after["bits_per_byte"] < before["bits_per_byte"]


def test_greedy_win_rate_under_a_reward_model_of_a_model_against_itself_is_one_half(tiny_model_dir, reward_model_dir,
                                                                                  tiny_context, tmp_path):
    import shutil

    from lmforge.plugins.evaluators.stage_effects import WinRate

    artifact = shutil.copytree(tiny_model_dir, tmp_path / "model")  # the evaluator writes win_rate.json into it
    greedy = WinRate(judge=str(reward_model_dir), temperature=0, max_new_tokens=6, limit=4, system_prompt=None)
    result = greedy.evaluate(artifact, {"model": artifact}, tiny_context)
    assert result["win_rate"] == 0.5 and result["pairs"] == 4  # one greedy answer per prompt
    assert result["score"] == result["baseline_score"]


def test_gsm8k_exact_match_scores_final_numbers(tiny_model_dir, tiny_context, tmp_path):
    from lmforge.plugins.aligners.rewards import final_answer
    from lmforge.plugins.evaluators import GSM8K

    assert final_answer("so 3 + 4 = 7\n#### 7") == final_answer("The answer is 7.") == "7"
    data = tmp_path / "gsm.jsonl"
    data.write_text(json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}) + "\n")
    result = GSM8K(data=str(data), max_new_tokens=4).evaluate(tiny_model_dir, {}, tiny_context)
    assert result == {"exact_match": 0.0, "questions": 1}


def test_evaluators_run_inside_the_stage_and_land_in_its_manifest(tiny_model_dir, tmp_path):
    held_out = tmp_path / "held.txt"
    held_out.write_text("A small held-out paragraph of ordinary English text for the evaluator to read.")
    cfg = lmforge.compose([f"run.root={tmp_path}", "run.name=ev", "pipeline=sft_only", "run.quiet=true",
                           f"pipeline.stages.finetuner.model={tiny_model_dir}", "finetuner.max_steps=1",
                           f"evaluation.finetuner=[{{name:perplexity,text:{held_out}}}]"])
    result = lmforge.run(cfg)
    evaluation = json.loads((result.artifacts["finetuner"] / "eval.json").read_text())
    manifest = lmforge.read_manifest(result.artifacts["finetuner"])
    assert evaluation["perplexity"]["tokens"] > 5
    assert manifest["metrics"]["eval/perplexity/perplexity"] == evaluation["perplexity"]["perplexity"]
    bad = lmforge.compose([f"run.root={tmp_path}", "run.name=ev2", "pipeline=sample_only",
                           f"pipeline.stages.sampler.model={tiny_model_dir}", "evaluation.sampler=[perplexty]"])
    with pytest.raises(lmforge.PluginNotFound, match="did you mean 'perplexity'"):
        lmforge.run(bad)
    assert not (tmp_path / "ev2" / "sampler").exists()
    twice = lmforge.compose([f"run.root={tmp_path}", "run.name=ev3", "pipeline=sample_only",
                             f"pipeline.stages.sampler.model={tiny_model_dir}",
                             "evaluation.sampler=[answers,{name:answers,limit:2}]"])
    with pytest.raises(lmforge.ConfigError, match=r"evaluation.sampler\[1\]: 'answers' is already listed at \[0\]"):
        lmforge.run(twice)
    assert not (tmp_path / "ev3" / "sampler").exists()
