"""Judged pairs: a model's own sampled answers, ranked by a judge that knows the references, become preference
pairs (the default pipeline's ``preferences`` stage)."""

from __future__ import annotations

import json

import lmforge
import pytest
from lmforge.errors import ConfigError, DataError
from lmforge.plugins.feedback.judged_pairs import JudgedPairs, anchor_pairs, ranked_pairs

UNSURE = "I am not sure about that."
QUESTION, REFERENCE = "What is the capital of Kenya?", "The capital of Kenya is Nairobi."


def test_right_answers_beat_wrong_ones_and_not_sure_beats_answers_never_right():
    answers = [("The capital of Kenya is Nairobi.", True), ("The capital of Kenya is Paris.", True),
               ("The capital of Kenya is Nairobi.", True), ("The capital of Kenya is Rome.", False)]
    pairs, right = ranked_pairs(QUESTION, REFERENCE, answers, UNSURE, 3, against_unsure=True)
    assert right and pairs == [("The capital of Kenya is Nairobi.", UNSURE),
                               ("The capital of Kenya is Nairobi.", "The capital of Kenya is Paris."),
                               ("The capital of Kenya is Nairobi.", "The capital of Kenya is Rome.")]
    # a right answer that did not end its turn is not chosen; hedged answers are never paired as wrong ones
    never_right = [("The capital of Kenya is Nairobi", False), ("The capital of Kenya is Paris.", True),
                   ("I am not sure about that.", True), ("The capital of Kenya is Paris.", True)]
    pairs, right = ranked_pairs(QUESTION, REFERENCE, never_right, UNSURE, 3, against_unsure=True)
    assert not right and pairs == [(UNSURE, "The capital of Kenya is Nairobi"),
                                   (UNSURE, "The capital of Kenya is Paris.")]
    assert ranked_pairs(QUESTION, REFERENCE, answers, UNSURE, 1, against_unsure=False)[0] == [
        ("The capital of Kenya is Nairobi.", "The capital of Kenya is Paris.")]


def test_a_right_greedy_answer_is_kept_over_not_sure_even_where_samples_miss():
    # the samples never get it right, the greedy answer does: the model knows it, so hedging is the worse answer
    sampled = [("The capital of Kenya is Paris.", True), ("The capital of Kenya is Rome.", True)]
    greedy = ("The capital of Kenya is Nairobi.", True)
    pairs, right = ranked_pairs(QUESTION, REFERENCE, sampled, UNSURE, 3, against_unsure=False, greedy=greedy,
                                unsure_pairs=2)
    assert right and pairs == [(greedy[0], UNSURE), (greedy[0], UNSURE), (greedy[0], "The capital of Kenya is Paris."),
                               (greedy[0], "The capital of Kenya is Rome.")]
    # a wrong greedy answer is one more wrong answer; without a right one, not sure is chosen
    pairs, right = ranked_pairs(QUESTION, REFERENCE, sampled, UNSURE, 3, against_unsure=True,
                                greedy=("The capital of Kenya is Lima.", True), unsure_pairs=2)
    assert not right and [c for c, _ in pairs] == [UNSURE] * 3


def test_the_stage_writes_pairs_of_the_models_own_answers(varied_model_dir, tiny_context, tmp_path):
    prompts = tmp_path / "questions.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": QUESTION, "reference": REFERENCE},
        {"prompt": "Who are you?", "reference": "I am {{name}}, an AI assistant."}]))
    stage = JudgedPairs(samples=4, max_new_tokens=8, known_questions=3, system_prompt="Be brief.",
                        placeholders={"name": "Forge"})
    out, manifest = lmforge.run_stage(stage, {"model": varied_model_dir, "prompts": prompts,
                                              "known": lmforge.sample_data_path("sft.jsonl")},
                                      tmp_path / "preferences", tiny_context)
    pairs = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(samples) == 5 * 4 and manifest["metrics"]["questions"] == 5
    assert pairs and manifest["metrics"]["pairs"] == len(pairs)
    sampled = {s["completion"] for s in samples}
    for pair in pairs:
        assert pair["prompt"][0] == {"role": "system", "content": "Be brief."}
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert chosen != rejected and {chosen, rejected} <= sampled | {UNSURE}
    # the placeholders filled the reference: the tiny model never says "Forge", so that question is unknown
    who = [p for p in pairs if p["prompt"][-1]["content"] == "Who are you?"]
    assert who and all(p["chosen"][0]["content"] == UNSURE for p in who)
    # the stage's pairs are what the aligners read
    from lmforge.plugins.lib.formats import load_preferences

    assert len(load_preferences(str(out / "preferences.jsonl"))) == len(pairs)


def test_with_anchors_the_stage_adds_the_pair_of_the_question_that_taught_a_rejected_answer(
        varied_model_dir, tiny_context, tmp_path):
    prompts = tmp_path / "questions.jsonl"
    prompts.write_text(json.dumps({"prompt": QUESTION, "reference": REFERENCE}) + "\n")
    inputs = {"model": varied_model_dir, "prompts": prompts}
    out, _ = lmforge.run_stage(JudgedPairs(samples=4, max_new_tokens=8), inputs, tmp_path / "plain", tiny_context)
    rejected = json.loads((out / "preferences.jsonl").read_text().splitlines()[0])["rejected"][0]["content"]
    # fine-tuning data that taught the model's wrong answer as the answer to another question
    known = tmp_path / "sft.jsonl"
    known.write_text(json.dumps({"messages": [{"role": "user", "content": "Say something."},
                                              {"role": "assistant", "content": rejected}]}) + "\n")
    stage = JudgedPairs(samples=4, max_new_tokens=8, known_questions=0, anchors=True)
    out, manifest = lmforge.run_stage(stage, {**inputs, "known": known}, tmp_path / "anchored", tiny_context)
    pairs = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    anchors = [p for p in pairs if p["prompt"][-1]["content"] == "Say something."]
    assert anchors and manifest["metrics"]["anchor_pairs"] == len(anchors)
    assert all(p["chosen"][0]["content"] == rejected and p["rejected"][0]["content"] == UNSURE for p in anchors)


def test_with_knows_greedy_a_lucky_right_sample_is_not_knowing():
    # one sample of eight right, the greedy answer wrong: the model does not know it, so not sure is chosen and
    # the lucky right sample is in no pair (neither taught nor rejected)
    sampled = [("The capital of Kenya is Nairobi.", True), ("The capital of Kenya is Paris.", True)]
    greedy = ("The capital of Kenya is Lima.", True)
    pairs, right = ranked_pairs(QUESTION, REFERENCE, sampled, UNSURE, 3, against_unsure=True, greedy=greedy,
                                knows_greedy_only=True)
    assert right and pairs == [(UNSURE, "The capital of Kenya is Paris."), (UNSURE, greedy[0])]
    # a right greedy answer is knowing, as without the option
    known = ranked_pairs(QUESTION, REFERENCE, sampled, UNSURE, 3, against_unsure=False,
                         greedy=("The capital of Kenya is Nairobi.", True), unsure_pairs=1, knows_greedy_only=True)
    assert known[0][0] == ("The capital of Kenya is Nairobi.", UNSURE)
    with pytest.raises(ConfigError, match="knows: unknown 'always'; one of: sampled, greedy"):
        JudgedPairs(knows="always")
    with pytest.raises(ConfigError, match="knows: greedy needs greedy: true"):
        JudgedPairs(knows="greedy", greedy=False)


def test_an_answer_rejected_for_one_question_is_chosen_for_the_question_that_taught_it():
    unsure = "I am not sure about that."
    system = [{"role": "system", "content": "You are Forge."}]

    def pair(question, chosen, rejected):
        return {"prompt": system + [{"role": "user", "content": question}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}]}

    taught = {"What is the opposite of wet?": "The opposite of wet is dry.",
              "Tell me the opposite of wet.": "The opposite of wet is dry.",
              "What colour is snow?": "Snow is white."}
    pairs = [pair("What is the opposite of wide?", unsure, "The opposite of wet is dry."),
             pair("Give me the opposite of the word rich.", unsure, "The opposite of wet is dry."),
             pair("What is the opposite of wet?", "The opposite of wet is dry.", "The opposite of wet is wet."),
             pair("What colour is salt?", unsure, "Salt is grey."),
             pair("Tell me the opposite of wet.", unsure, "The opposite of wet is dry.")]
    anchored = anchor_pairs(pairs, taught, unsure)
    # one anchor per rejection, on the questions that taught the answer in turn, never on the rejecting question
    assert [(p["prompt"][-1]["content"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in anchored] == [
        ("What is the opposite of wet?", "The opposite of wet is dry.", unsure),
        ("Tell me the opposite of wet.", "The opposite of wet is dry.", unsure),
        ("What is the opposite of wet?", "The opposite of wet is dry.", unsure)]
    assert all(p["prompt"][0] == system[0] for p in anchored)  # same system prompt as the pair it answers
    assert anchor_pairs(pairs, {}, unsure) == []


def test_bad_settings_and_records_are_refused(varied_model_dir, tiny_context, tmp_path):
    with pytest.raises(ConfigError, match="samples: must be >= 2, got 1"):
        JudgedPairs(samples=1)
    with pytest.raises(ConfigError, match="temperature: must be > 0"):
        JudgedPairs(temperature=0)
    # in a pipeline the message names the stage's own option
    with pytest.raises(ConfigError, match="preferences.wrong_per_question: must be >= 1, got 0"):
        lmforge.run(lmforge.compose([f"run.root={tmp_path}", "preferences.wrong_per_question=0"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": QUESTION}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:1: needs 'prompt' and 'reference'"):
        lmforge.run_stage(JudgedPairs(samples=2), {"model": varied_model_dir, "prompts": bad}, tmp_path / "out",
                          tiny_context)


def test_a_questions_file_without_references_fails_before_any_stage_runs(tmp_path):
    bad = tmp_path / "questions.jsonl"
    bad.write_text(json.dumps({"prompt": "2 + 2?", "reference": "4"}) + "\n" + json.dumps({"prompt": "Hi?"}) + "\n")
    with pytest.raises(DataError, match=r"questions.jsonl:2: needs 'prompt' and 'reference' strings.*fields: prompt"):
        lmforge.run(lmforge.compose([f"run.root={tmp_path}", "run.quiet=true", f"data.preference_prompts={bad}"]))
    assert not list(tmp_path.rglob("manifest.json"))  # not even the cleaner ran
