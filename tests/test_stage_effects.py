"""Stage effects: the held-out answer evaluators, the rule judge, and the report section built from them."""

from __future__ import annotations

import json
import re
import shutil

import lmforge
import pytest
from lmforge.errors import ConfigError
from lmforge.plugins.evaluators.answers_report import markdown_section
from lmforge.plugins.evaluators.stage_effects import (
    STOP,
    Answers,
    WinRate,
    abstains,
    document_start,
    english_share,
    fact_prompt,
    is_correct,
    judge_provenance,
    known_as_text,
    reference_score,
    taught_questions,
    verdict_counts,
    wilson_interval,
)


def test_rule_judge_needs_the_answer_word_beyond_the_question():
    assert is_correct("The opposite of hot is cold.", "The opposite of hot is cold.", "What is the opposite of hot?")
    assert not is_correct("The opposite of hot is hot.", "The opposite of hot is cold.", "What is the opposite of hot?")
    assert not is_correct("The opposite of wet is slow.", "The opposite of hot is cold.", "What is the opposite of hot?")
    assert is_correct("6 plus 7 is 13.", "6 plus 7 is 13.", "What is 6 + 7?")
    ended = reference_score("6 plus 7 is 13.", "6 plus 7 is 13.", "What is 6 + 7?", True)
    looping = reference_score("6 plus 7 is 6 plus 7 is 6 plus 7 is", "6 plus 7 is 13.", "What is 6 + 7?", False)
    assert ended > looping


def test_rule_judge_rejects_the_right_word_about_another_subject():
    """Answers the default run's model really gave: the reference's word, said of something not asked about."""
    day, day_ref = "What is the day after Tuesday?", "The day after Tuesday is Wednesday."
    assert not is_correct("The day after Wednesday is Thursday.", day_ref, day)
    assert is_correct("The day after Tuesday is Wednesday.", day_ref, day)
    assert is_correct("Wednesday.", day_ref, day)
    assert not is_correct("Milk is white.", "Salt is white.", "What color is salt?")
    assert not is_correct("6 plus 3 is 8.", "6 plus 2 is 8.", "Add 6 and 2.")
    assert is_correct("2 plus 6 is 8.", "6 plus 2 is 8.", "Add 6 and 2.")
    opposite, opposite_ref = "Tell me the opposite of young.", "The opposite of young is old."
    assert not is_correct("The opposite of old is new.", opposite_ref, opposite)
    assert is_correct("The opposite is old.", opposite_ref, opposite)
    capital = "What's the capital city of Poland?"
    assert is_correct("It is Warsaw.", "The capital of Poland is Warsaw.", capital)
    assert is_correct("Warsaw is the capital of Poland.", "The capital of Poland is Warsaw.", capital)
    # cut off before its subject: the answer word is there, but as the subject of a claim about another month
    month, month_ref = "What month comes after February?", "The month after February is March."
    assert not is_correct("The month after March is\ufffd.", month_ref, month)
    assert is_correct("The month after February is March.", month_ref, month)
    # an answer of two words, both in the question: the two together, beyond the question
    mexico, mexico_ref = "Which city is the capital of Mexico?", "The capital of Mexico is Mexico City."
    assert is_correct(mexico_ref, mexico_ref, mexico) and is_correct("Mexico City.", mexico_ref, mexico)
    assert not is_correct("The capital of Mexico is Athens.", mexico_ref, mexico)
    assert not is_correct("The capital of Mexico is a city.", mexico_ref, mexico)
    # an answer word the judge otherwise skips ("after" in "the day after"): a bundled held-out fact
    before, before_ref = "Tell me the opposite of before.", "The opposite of before is after."
    assert is_correct(before_ref, before_ref, before) and is_correct("After.", before_ref, before)
    assert not is_correct("The opposite of up is down.", before_ref, before)


def test_rule_judge_ranks_the_right_answer_over_not_sure_over_a_wrong_one():
    question, reference = "What is the capital of Kenya?", "The capital of Kenya is Nairobi."
    right, unsure, wrong = ("The capital of Kenya is Nairobi.", "I am not sure about that.",
                            "The capital of Kenya is Paris.")
    assert abstains(unsure) and not abstains(right) and not abstains(wrong)
    scores = [reference_score(a, reference, question, True) for a in (right, unsure, wrong)]
    assert scores[0] > scores[1] > scores[2]
    # without a reference nothing is known to be wrong: hedging earns nothing
    assert reference_score(unsure, None, question, True) <= reference_score(wrong, None, question, True)


def _normalised(text: str) -> str:
    """Case, punctuation and whitespace away, "+" read as "plus", a sum's operands in ascending order."""
    words = " ".join(re.findall(r"[^\W_]+", text.lower().replace("+", " plus ")))
    return re.sub(r"\b(\d+) (plus|and) (\d+)\b",
                  lambda m: " ".join([min(m[1], m[3], key=int), m[2], max(m[1], m[3], key=int)]), words)


def _sample_rows(name):
    with open(lmforge.sample_data_path(name)) as handle:
        return [json.loads(line) for line in handle]


def test_normaliser_sees_one_question_in_other_case_punctuation_and_operand_order():
    assert _normalised("What is 3 + 1?") == _normalised("what is 1 plus 3") != _normalised("What is 1 plus 4?")
    assert _normalised("3 plus 1 is 4.") == _normalised("1 plus 3 is 4")


def test_held_out_prompts_share_no_question_or_fact_with_any_training_data():
    prompts = _sample_rows("prompts.jsonl")
    held = [r for r in prompts if r["held_out"]]
    assert all(isinstance(r["held_out"], bool) for r in prompts) and len(held) >= 40
    # the trained behaviours are asked too, marked as such
    assert {r["kind"] for r in prompts if not r["held_out"]} == {"identity", "chat"}
    questions, answers = set(), set()
    for row in _sample_rows("sft.jsonl"):
        questions |= {_normalised(m["content"]) for m in row["messages"] if m["role"] == "user"}
        answers |= {_normalised(m["content"]) for m in row["messages"] if m["role"] == "assistant"}
    for row in _sample_rows("preference_prompts.jsonl"):
        questions.add(_normalised(row["prompt"]))
        answers.add(_normalised(row["reference"]))
    for pair in _sample_rows("preferences.jsonl"):
        questions |= {_normalised(m["content"]) for m in pair["prompt"] if m["role"] == "user"}
        answers.add(_normalised(pair["chosen"][-1]["content"]))
    # no held-out question is asked in training, in any case, punctuation or operand order; and no training
    # answer states a held-out fact (which catches the same fact asked in another phrasing)
    assert not [r["prompt"] for r in held if _normalised(r["prompt"]) in questions]
    assert not [r["reference"] for r in held if _normalised(r["reference"]) in answers]
    # a sum is held out in both orders or in neither
    sums = [r for r in held if r["kind"] == "sum"]
    assert sums and all(_normalised(r["reference"]) not in answers for r in sums)
    # the identity questions are trained behaviours: asked in fine-tuning word for word
    assert all(_normalised(r["prompt"]) in questions for r in prompts if r["kind"] == "identity")


def test_bundled_pairs_teach_the_unsure_reply_and_answering():
    # the fine-tuning data teaches the reply the preference pairs then choose where the model does not know
    assert sum(abstains(r["messages"][-1]["content"]) for r in _sample_rows("sft.jsonl")) >= 200
    pairs = _sample_rows("preferences.jsonl")
    assert any(abstains(p["chosen"][0]["content"]) for p in pairs)
    assert any(abstains(p["rejected"][0]["content"]) for p in pairs)


def test_english_share_uses_the_cleaners_language_id():
    assert english_share(["The capital of France is Paris.", "I am Forge, a small assistant."]) == 1.0
    assert english_share(["Die Hauptstadt von Frankreich ist Paris.", "8 8 8 8 8 8"]) == 0.0
    # an empty continuation (a base model ending the document) is no language at all: counted apart, as `empty`
    assert english_share(["The capital of France is Paris.", "", "  "]) == 1.0
    assert english_share(["", ""]) == 0.0


def test_answers_evaluator_writes_answers_and_metrics(varied_model_dir, tiny_context, tmp_path):
    prompts = tmp_path / "held_out.jsonl"
    rows = [{"prompt": "Who are you?", "reference": "I am {{name}}.", "kind": "identity", "held_out": False},
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
    assert [w["held_out"] for w in written] == [False, True]  # held out unless the prompt file says otherwise
    # the held-out fact is also completed as plain text; the verdicts of the facts it completes are counted apart
    assert "known_as_text" not in written[0] and isinstance(written[1]["known_as_text"], bool)
    assert metrics["known_as_text"] == written[1]["known_as_text"] and metrics["known_as_text_n"] == 1
    assert metrics["known_right"] + metrics["known_not_sure"] + metrics["known_wrong"] == metrics["known_as_text"]
    # counts of the held-out answers for other code to read from the manifest; trained behaviours apart
    assert metrics["n"] == metrics["held_out_n"] == 1 and metrics["trained_n"] == 1
    assert metrics["right"] + metrics["not_sure"] + metrics["wrong"] == 1
    base = Answers({"prompts": str(prompts), "max_new_tokens": 4, "mode": "continuation"}).evaluate(
        artifact, {}, tiny_context)
    assert "ends_turn" not in base and "identity" not in base
    assert base["known_as_text"] in (0, 1) and "known_right" not in base  # a base model is probed, not judged
    assert "known_as_text" not in Answers({"prompts": str(prompts), "max_new_tokens": 4, "mode": "continuation",
                                           "as_text": False}).evaluate(artifact, {}, tiny_context)
    with pytest.raises(ConfigError, match="evaluation.answers.mode"):
        Answers({"mode": "chatty"}).evaluate(artifact, {}, tiny_context)


def test_answers_evaluator_asks_questions_the_fine_tuning_data_taught(varied_model_dir, tiny_context, tmp_path):
    chats = tmp_path / "sft.jsonl"
    turns = [("What is 2 + 2?", "2 plus 2 is 4."), ("Who made you?", "{{author}} made me."),
             ("What colour is snow?", "Snow is white.")]
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in turns]
    rows.append({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                              {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}]})
    chats.write_text("".join(json.dumps(r) + "\n" for r in rows))
    artifact = tmp_path / "model"
    shutil.copytree(varied_model_dir, artifact)
    metrics = Answers({"max_new_tokens": 4, "samples": 1, "limit": 2, "taught": str(chats), "taught_questions": 2,
                       "placeholders": {"author": "lmforge"}}).evaluate(artifact, {}, tiny_context)
    written = [json.loads(line) for line in (artifact / "taught_answers.jsonl").read_text().splitlines()]
    # two of the single-turn chats (a multi-turn chat is not one question), the answer it was taught as reference
    assert len(written) == metrics["taught_n"] == 2
    assert {w["prompt"] for w in written} <= {q for q, _ in turns}
    assert {w["reference"] for w in written} <= {"2 plus 2 is 4.", "lmforge made me.", "Snow is white."}
    assert metrics["taught_right"] + metrics["taught_not_sure"] + metrics["taught_wrong"] == 2
    assert [w["prompt"] for w in written] == [q for q, _ in taught_questions(chats, 2, placeholders={"author": "lmforge"})]  # the same draw every time
    with pytest.raises(ConfigError, match="evaluation.answers.taught: .*missing.jsonl: no such file"):
        Answers({"taught": str(tmp_path / "missing.jsonl")})
    multi_turn = tmp_path / "multi_turn.jsonl"
    multi_turn.write_text(json.dumps(rows[-1]) + "\n")
    with pytest.raises(ConfigError, match="evaluation.answers.taught: .*multi_turn.jsonl: no single-turn chat"):
        Answers({"taught": str(multi_turn)})  # at config time, before any model is trained


def test_a_fact_is_known_as_text_when_the_model_completes_it(varied_model_dir):
    """The probe behind ``known_as_text``: the reference up to its answer, continued greedily by a real model after
    the token a document starts after. The references are made from the model's own continuations (one and two
    words), so it knows each first one and not the second."""
    import torch
    from lmforge.plugins.lib.models import load_tokenizer
    from transformers import AutoModelForCausalLM

    assert fact_prompt("The opposite of wide is narrow.") == ("The opposite of wide is", "narrow")
    mexico = fact_prompt("The capital of Mexico is Mexico City.", "Which city is the capital of Mexico?")
    assert mexico == ("The capital of Mexico is", "Mexico City")
    tokenizer = load_tokenizer(str(varied_model_dir))
    model = AutoModelForCausalLM.from_pretrained(varied_model_dir).eval()
    # lmforge's tokenizer adds no start token: its documents are joined by the end-of-text token in pretraining
    assert document_start(tokenizer) == [tokenizer.eos_token_id]
    heads = ["The opposite of wide is", "The capital of Peru is", "A cow says", "The plural of mouse is",
             "The colour of snow is", "The day after Monday is", "The month after May is", "A baby cat is called",
             "Grass is", "The number nine is written", "A sheep says", "The opposite of hot is"]
    continued = []
    for head in heads:  # one at a time: no padding in what the probe is checked against
        ids = [tokenizer.eos_token_id, *tokenizer(head, add_special_tokens=False)["input_ids"]]
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=12,
                             pad_token_id=tokenizer.pad_token_id)
        continued.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))
    facts = []
    for head, text in zip(heads, continued):
        if not text[:1].isspace():
            continue  # the continuation goes on with the last word ("is" -> "isnarrow"): no new word to check
        words = [w for w in re.findall(r"[^\W_]+", text) if w.lower() not in STOP | set(head.lower().split())]
        if words and fact_prompt(f"{head} {words[0]}.") == (head, words[0]):
            facts += [(f"{head} {words[0]}.", ""), (f"{head} {words[0]}x.", "")]
        both = text.split()[:2]
        two = fact_prompt(f"{head} {' '.join(both)}.", f"Which {both[-1]}?") if len(both) == 2 else None
        if two == (head, " ".join(both)):  # a two-word answer whose last word the question holds
            facts += [(f"{head} {' '.join(both)}.", f"Which {both[-1]}?"), (f"{head} {both[0]} x.", "Which x?")]
    assert len(facts) >= 4 and any(" " in fact_prompt(*f)[1] for f in facts), continued
    assert known_as_text(model, tokenizer, facts, batch_size=3) == [True, False] * (len(facts) // 2)
    # a continuation glued to the last word is not the answer, though its letters are
    glued = next(f"{head} {text.split()[0]}." for head, text in zip(heads, continued) if text[:1].isalnum())
    assert known_as_text(model, tokenizer, [(glued, "")]) == [False]
    # nothing to complete: no text before the answer, or no answer words
    assert known_as_text(model, tokenizer, [("Warsaw.", "What is the capital of Poland?"), ("Is.", "")]) == [None, None]


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


def test_verdicts_and_their_wilson_intervals():
    rows = [{"answer": "6 plus 7 is 13.", "correct": True}, {"answer": "I am not sure about that.", "correct": False},
            {"answer": "6 plus 7 is 12.", "correct": False}, {"answer": "hi", "correct": None}]
    assert verdict_counts(rows) == {"right": 1, "not_sure": 1, "wrong": 1, "n": 3}
    low, high = wilson_interval(5, 10)
    assert round(low, 3) == 0.237 and round(high, 3) == 0.763
    assert wilson_interval(0, 10)[0] == 0.0 and round(wilson_interval(0, 10)[1], 3) == 0.278


def test_report_leads_with_right_not_sure_wrong_and_flags_a_judge_that_shares_the_policys_labels(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("{}\n")
    (tmp_path / "reward_model").mkdir()
    (tmp_path / "reward_model" / "manifest.json").write_text(json.dumps({"inputs": {"data": {"path": str(pairs)}}}))
    provenance = judge_provenance("stage:reward_model", str(tmp_path / "reward_model"), pairs)
    assert provenance["independent"] is False and provenance["learned_from"] == str(pairs)
    other = tmp_path / "other.jsonl"
    other.write_text("{}\n{}\n")
    assert judge_provenance("stage:reward_model", str(tmp_path / "reward_model"), other)["independent"] is True
    assert judge_provenance("reference", "reference", pairs)["kind"] == "rule judge"
    for stage, answers in (("finetuner", ["I am Forge.", "6 plus 7 is 13.", "6 plus 7 is 12."]),
                           ("aligner", ["I am Forge.", "6 plus 7 is 13.", "I am not sure about that."])):
        (tmp_path / stage).mkdir(exist_ok=True)
        rows = [{"prompt": "Who are you?", "answer": answers[0], "correct": True, "held_out": False, "mode": "chat"},
                {"prompt": "What is 6 + 7?", "answer": answers[1], "correct": True, "held_out": True, "mode": "chat"},
                {"prompt": "What is 7 + 5?", "answer": answers[2], "correct": False, "held_out": True, "mode": "chat"}]
        (tmp_path / stage / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "aligner" / "win_rate.json").write_text(json.dumps(provenance))
    manifests = {"finetuner": {"metrics": {}}, "reward_model": {"metrics": {"eval_accuracy": 0.7}},
                 "aligner": {"metrics": {"eval/win_rate/win_rate": 0.68, "eval/win_rate/pairs": 100}}}
    section = markdown_section(tmp_path, manifests)
    assert section.index("## What the models answer") < section.index("## What each stage did")
    assert "| finetuner | 1/2 = 0.50 (0.09–0.91) | 0/2 = 0.00 (0.00–0.66) | 1/2 = 0.50 (0.09–0.91) | 1/1 = 1.00 (0.21–1.00) |" in section
    assert "| aligner | 1/2 = 0.50 (0.09–0.91) | 1/2 = 0.50 (0.09–0.91) | 0/2 = 0.00 (0.00–0.66) |" in section
    assert "0.68 of 100" in section and "**Not independent**" in section
    assert "| Who are you? *(trained)* |" in section
    # what alignment did, prompt by prompt: the right answer kept, the wrong one turned into "not sure"
    assert "| finetuner \\ aligner | right | not sure | wrong |" in section
    assert "| right | 1 | 0 | 0 |" in section and "| wrong | 0 | 1 | 0 |" in section
    assert "right answers lost" not in section
    rows = [json.loads(line) for line in (tmp_path / "aligner" / "answers.jsonl").read_text().splitlines()]
    rows[1].update(answer="6 plus 7 is 14.", correct=False)
    (tmp_path / "aligner" / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    section = markdown_section(tmp_path, manifests)
    assert "| right | 0 | 0 | 1 |" in section
    assert "- right answers lost: 1: *What is 6 \\+ 7?* 6 plus 7 is 13\\. → 6 plus 7 is 14\\." in section
    # what each model kept of the questions fine-tuning taught: a column and a line
    for stage, answers in (("finetuner", ["Snow is white.", "2 plus 2 is 4."]),
                           ("aligner", ["I am not sure about that.", "2 plus 2 is 4."])):
        taught = [{"prompt": "What colour is snow?", "answer": answers[0], "reference": "Snow is white.",
                   "correct": answers[0] == "Snow is white."},
                  {"prompt": "What is 2 + 2?", "answer": answers[1], "reference": "2 plus 2 is 4.", "correct": True}]
        (tmp_path / stage / "taught_answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in taught))
    section = markdown_section(tmp_path, manifests)
    assert "| wrong | trained behaviours right | taught questions right |" in section
    assert "| 1/1 = 1.00 (0.21–1.00) | 2/2 = 1.00 (0.34–1.00) |" in section
    assert "| 1/1 = 1.00 (0.21–1.00) | 1/2 = 0.50 (0.09–0.91) |" in section
    assert ("- **aligner** on 2 questions of the fine-tuning data: right 2 → 1; of finetuner's right answers 1 became "
            "\"not sure\" and 0 wrong, 0 gained (e.g. *What colour is snow?* Snow is white\\. → I am not sure about "
            "that\\.).") in section
    # what each model knows as text, and what it says when asked: the aligned model hedges a fact it completes
    assert "Known as text" not in section
    for stage, known in (("pretrainer", [True, False]), ("finetuner", [True, False]), ("aligner", [True, True])):
        (tmp_path / stage).mkdir(exist_ok=True)
        rows = [json.loads(line) for line in (tmp_path / "finetuner" / "answers.jsonl").read_text().splitlines()]
        if stage == "aligner":
            rows[1].update(answer="I am not sure about that.", correct=False)
        for row, flag in zip(rows[1:], known):
            row["known_as_text"] = flag
        rows = [{**r, "mode": "continuation"} for r in rows] if stage == "pretrainer" else rows
        (tmp_path / stage / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    section = markdown_section(tmp_path, {"pretrainer": {"metrics": {}}, **manifests})
    assert ("- **Known as text**: held-out facts each model completes as plain text (the reference up to its answer, "
            "continued greedily), whatever it answers when asked: pretrainer 1 of 2; finetuner 1 of 2 (asked them: "
            "1 right, 0 not sure, 0 wrong); aligner 2 of 2 (asked them: 0 right, 1 not sure, 1 wrong).") in section


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
    # the chat models are also asked questions of their SFT data: what alignment keeps of what SFT taught
    for stage in ("finetuner", "aligner"):
        assert {"name": "answers", "taught": cfg["data"]["sft"]} in cfg["evaluation"][stage]
    # the reward model and the aligner hold pairs out by prompt (plugins/lib/training.py split_heldout)
    assert cfg["reward_model"]["eval_fraction"] > 0
