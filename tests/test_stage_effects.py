"""Stage effects: the held-out answer evaluators, the rule judge, and the report section built from them."""

from __future__ import annotations

import json

import lmforge
import pytest
from lmforge.errors import ConfigError
from lmforge.plugins.evaluators.stage_effects import (
    Answers,
    WinRate,
    abstains,
    english_share,
    is_correct,
    markdown_section,
    reference_score,
)


def test_rule_judge_needs_the_answer_word_beyond_the_question():
    assert is_correct("The opposite of hot is cold.", "The opposite of hot is cold.", "What is the opposite of hot?")
    assert not is_correct("The opposite of hot is hot.", "The opposite of hot is cold.", "What is the opposite of hot?")
    assert not is_correct("The opposite of wet is slow.", "The opposite of hot is cold.", "What is the opposite of hot?")
    assert is_correct("6 plus 7 is 13.", "6 plus 7 is 13.", "What is 6 + 7?")
    ended = reference_score("6 plus 7 is 13.", "6 plus 7 is 13.", "What is 6 + 7?", True)
    looping = reference_score("6 plus 7 is 6 plus 7 is 6 plus 7 is", "6 plus 7 is 13.", "What is 6 + 7?", False)
    assert ended > looping


def test_rule_judge_ranks_the_right_answer_over_not_sure_over_a_wrong_one():
    question, reference = "What is the capital of Kenya?", "The capital of Kenya is Nairobi."
    right, unsure, wrong = ("The capital of Kenya is Nairobi.", "I am not sure about that.",
                            "The capital of Kenya is Paris.")
    assert abstains(unsure) and not abstains(right) and not abstains(wrong)
    scores = [reference_score(a, reference, question, True) for a in (right, unsure, wrong)]
    assert scores[0] > scores[1] > scores[2]
    # without a reference nothing is known to be wrong: hedging earns nothing
    assert reference_score(unsure, None, question, True) <= reference_score(wrong, None, question, True)


def test_bundled_preference_questions_are_new_to_fine_tuning_and_to_evaluation():
    def rows(name):
        return [json.loads(line) for line in open(lmforge.sample_data_path(name))]

    preference = {r["prompt"] for r in rows("preference_prompts.jsonl")}
    trained = {r["messages"][0]["content"] for r in rows("sft.jsonl")}
    held_out = {r["reference"] for r in rows("prompts.jsonl")}
    assert len(preference) > 100 and not preference & trained
    assert not {r["reference"] for r in rows("preference_prompts.jsonl")} & held_out
    # the fine-tuning data teaches the reply the preference pairs then choose where the model does not know
    assert sum(abstains(r["messages"][-1]["content"]) for r in rows("sft.jsonl")) >= 200
    pairs = rows("preferences.jsonl")
    assert any(abstains(p["chosen"][0]["content"]) for p in pairs)
    assert any(abstains(p["rejected"][0]["content"]) for p in pairs)


def test_english_share_uses_the_cleaners_language_id():
    assert english_share(["The capital of France is Paris.", "I am Forge, a small assistant."]) == 1.0
    assert english_share(["Die Hauptstadt von Frankreich ist Paris.", "8 8 8 8 8 8"]) == 0.0


def test_answers_evaluator_writes_answers_and_metrics(varied_model_dir, tiny_context, tmp_path):
    prompts = tmp_path / "held_out.jsonl"
    rows = [{"prompt": "Who are you?", "reference": "I am {{name}}.", "kind": "identity"},
            {"prompt": "What is 2 + 2?", "reference": "2 plus 2 is 4.", "kind": "sum"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    artifact = tmp_path / "model"
    import shutil

    shutil.copytree(varied_model_dir, artifact)
    metrics = Answers({"prompts": str(prompts), "max_new_tokens": 4, "samples": 2, "system_prompt": None,
                       "placeholders": {"name": "Forge"}}).evaluate(artifact, {}, tiny_context)
    assert metrics["prompts"] == 2 and 0.0 <= metrics["ends_turn"] <= 1.0 and metrics["identity"] == 0.0
    written = [json.loads(line) for line in (artifact / "answers.jsonl").read_text().splitlines()]
    assert [w["reference"] for w in written] == ["I am Forge.", "2 plus 2 is 4."]
    base = Answers({"prompts": str(prompts), "max_new_tokens": 4, "mode": "continuation"}).evaluate(
        artifact, {}, tiny_context)
    assert "ends_turn" not in base and "identity" not in base
    with pytest.raises(ConfigError, match="evaluation.answers.mode"):
        Answers({"mode": "chatty"}).evaluate(artifact, {}, tiny_context)


def test_win_rate_of_a_model_against_itself_is_one_half(varied_model_dir, tiny_context, tmp_path):
    prompts = tmp_path / "held_out.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2 + 2?", "reference": "2 plus 2 is 4."}) + "\n")
    judge = WinRate({"prompts": str(prompts), "judge": "reference", "max_new_tokens": 4, "samples": 2,
                     "system_prompt": None})
    result = judge.evaluate(varied_model_dir, {"model": varied_model_dir}, tiny_context)
    assert result["win_rate"] == 0.5 and result["pairs"] == 2
    with pytest.raises(ConfigError, match="win_rate.baseline: 'nowhere' is neither an input"):
        WinRate({"baseline": "nowhere"}).evaluate(varied_model_dir, {}, tiny_context)


def test_report_section_puts_stages_side_by_side(tmp_path):
    manifests = {"pretrainer": {"metrics": {"eval_loss": 5.0, "eval/answers/alpha_words": 0.9}},
                 "finetuner": {"metrics": {"eval/answers/identity": 1.0, "eval/answers/ends_turn": 0.95}},
                 "preferences": {"metrics": {"pairs": 940, "unsure_chosen": 390}}}
    for stage, answer in (("pretrainer", "the cat sat on the"), ("finetuner", "I am *Forge*.")):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "answers.jsonl").write_text(json.dumps({"prompt": "Who are you?", "answer": answer}) + "\n")
    section = markdown_section(tmp_path, manifests)
    assert "| finetuner | identity answered (greedy) | 1 |" in section
    assert '| preferences | preference pairs made from its own answers | 940 |' in section
    assert '| preferences | pairs that prefer "I am not sure" | 390 |' in section
    assert "| Who are you? | the cat sat on the | I am \\*Forge\\*\\. |" in section
    assert markdown_section(tmp_path, {"cleaner": {"metrics": {}}}) == ""


def test_default_pipeline_asks_every_stage_the_held_out_prompts():
    cfg = lmforge.resolve_config(lmforge.compose([]))
    assert list(cfg["pipeline"]["stages"]) == ["cleaner", "tokenizer", "pretrainer", "finetuner", "preferences",
                                               "reward_model", "aligner", "sampler"]
    # the pairs are the fine-tuned model's own answers, ranked by the rule judge (plugins/feedback/judged_pairs.py)
    assert cfg["pipeline"]["stages"]["aligner"]["data"] == "stage:preferences/preferences.jsonl"
    assert cfg["pipeline"]["stages"]["reward_model"]["data"] == "stage:preferences/preferences.jsonl"
    # your own pairs instead, or a pipeline without that stage: the bundled pairs
    mine = lmforge.resolve_config(lmforge.compose(["data.preferences=mine.jsonl"]))["pipeline"]["stages"]
    assert mine["aligner"]["data"] == mine["reward_model"]["data"] == "mine.jsonl"
    dropped = lmforge.resolve_config(lmforge.compose(["~pipeline.stages.preferences"]))["pipeline"]["stages"]
    assert dropped["aligner"]["data"] == lmforge.sample_data_path("preferences.jsonl")
    assert {"name": "answers", "mode": "continuation"} in cfg["evaluation"]["pretrainer"]
    assert {e["name"] for e in cfg["evaluation"]["aligner"]} == {"answers", "win_rate"}
    held_out = [json.loads(line) for line in open(lmforge.sample_data_path("prompts.jsonl"))]  # noqa: SIM115
    trained = {json.loads(line)["messages"][0]["content"] for line in open(lmforge.sample_data_path("sft.jsonl"))}  # noqa: SIM115
    facts = [r for r in held_out if r["kind"] not in ("identity", "chat")]
    assert facts and not any(r["prompt"] in trained for r in facts)
