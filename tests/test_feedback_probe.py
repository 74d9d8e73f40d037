"""Self-interrogation: a tiny model with a planted knowledge boundary is probed, and the split it finds and the
SFT target it writes for each question are the planted ones.

The boundary is planted by real training, not by mocking the model: the tiny Llama is fine-tuned (lmforge's SFT
stage) to answer two questions correctly, two with one fixed wrong answer (confidently wrong: "unknown") and
two with four different answers in equal measure, one of them right ("inconsistent").
"""

from __future__ import annotations

import json

import lmforge
import pytest
from lmforge.errors import ConfigError, DataError
from lmforge.plugins.feedback.self_interrogation import SelfInterrogation, classify, extract_answer

PLANTED = [  # question, reference, what the model is taught
    ("How many legs does a spider have?", 8, "known"),
    ("How many days are in a week?", 7, "known"),
    ("How many moons does Mars have?", 2, "unknown"),
    ("In what year did the Berlin Wall fall?", 1989, "unknown"),
    ("How many bones are in the adult human body?", 206, "inconsistent"),
    ("How many keys does a piano have?", 88, "inconsistent"),
]


def taught_answers(reference: int, plan: str) -> list[int]:
    if plan == "known":
        return [reference] * 12
    if plan == "unknown":
        return [reference + 3] * 12
    return [reference, reference + 111, reference + 222, reference + 333] * 3


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_model_dir, tiny_context):
    from lmforge.plugins.finetuners.sft import SFTFinetuner

    root = tmp_path_factory.mktemp("probe")
    sft = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"#### {a}"}]}
           for q, ref, plan in PLANTED for a in taught_answers(ref, plan)]
    (root / "planted_sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    qa = root / "qa.jsonl"  # GSM8K's shape: the reference is the number after '####'
    qa.write_text("".join(json.dumps({"question": q, "answer": f"It is {ref}.\n#### {ref}"}) + "\n"
                          for q, ref, _ in PLANTED))
    model, _ = lmforge.run_stage(
        SFTFinetuner(max_steps=160, batch_size=8, learning_rate=3e-3, lr_scheduler="constant", save_steps=0,
                     logging_steps=40),
        {"model": tiny_model_dir, "data": root / "planted_sft.jsonl"}, root / "planted_model", tiny_context)
    return model, qa


def test_answer_extraction_and_labels():
    assert extract_answer("so 16 - 3 = 13 eggs\n#### 1,300", "number") == "1300"
    assert extract_answer("about 7.50 dollars, then 12", "number") == "12"
    assert extract_answer("no digits", "number") is None
    assert extract_answer("  Paris.", "text") == extract_answer("paris", "text")
    assert classify(["5"] * 7 + ["4"], "5", 0.75, 0.75)["label"] == "known"
    assert classify(["6"] * 7 + ["5"], "5", 0.75, 0.75)["label"] == "unknown"
    assert classify([None] * 8, "5", 0.75, 0.75)["label"] == "unknown"  # never answers: does not know
    assert classify(["5", "6", "7", "5", "8", "9", "5", "6"], "5", 0.75, 0.75)["label"] == "inconsistent"
    scattered = classify(["6", "7", "8", "9", "6", "1", "2", "3"], "5", 0.75, 0.75)
    assert scattered["label"] == "unknown"  # never right: "not sure", not its most common wrong answer
    sometimes = classify(["6", "6", "6", "5", "6", "7", "5", "6"], "5", 0.75, 0.75)
    assert (sometimes["label"], sometimes["guess"], sometimes["agree"]) == ("inconsistent", "5", 2)


def test_right_answer_needs_the_reference_steps_and_replay_mixes_ordinary_data(tmp_path):
    from lmforge.plugins.feedback.self_interrogation import has_steps, reference_steps

    steps = reference_steps("She sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether <<48+24=72>>72.\n#### 72")
    assert steps == ["24", "72"]
    assert has_steps("48 / 2 = 24 in May, so 48 + 24 = 72. #### 72", steps)
    assert not has_steps("I guess 72", steps)  # the right final number alone is not the right answer
    replay = tmp_path / "ordinary.jsonl"
    replay.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                       {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                              for i in range(3)))
    mixed = SelfInterrogation(replay_ratio=2.0)._replay(replay, 4, seed=0)
    assert len(mixed) == 8 and {m["boundary"] for m in mixed} == {"replay"}
    assert {m["messages"][0]["content"] for m in mixed} == {"q0", "q1", "q2"}
    assert SelfInterrogation(replay_ratio=0.0)._replay(replay, 4, seed=0) == []


def test_bad_settings_and_data_fail_in_one_line(tmp_path, tiny_model_dir, tiny_context):
    with pytest.raises(ConfigError, match="answer_type"):
        SelfInterrogation(answer_type="numbers")
    with pytest.raises(ConfigError, match="samples"):
        SelfInterrogation(samples=1)
    with pytest.raises(ConfigError, match="unknown_replly"):
        SelfInterrogation(unknown_replly="x")
    bad = tmp_path / "qa.jsonl"
    bad.write_text(json.dumps({"question": "q?", "answer": "#### 3"}) + "\n" + json.dumps({"q": "x"}) + "\n")
    with pytest.raises(DataError, match=r"qa.jsonl: record 2: needs 'question'"):
        lmforge.run_stage(SelfInterrogation(samples=2), {"model": tiny_model_dir, "prompts": bad},
                          tmp_path / "out", tiny_context)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_planted_boundary_is_found_and_probe_sft_pipeline_trains_on_it(planted, tmp_path):
    from lmforge.plugins.lib.formats import load_conversations

    model, qa = planted
    cfg = lmforge.compose([
        "pipeline=probe_sft", f"probe_model={model}", f"qa_data={qa}", "hardware=cpu", f"run.root={tmp_path}",
        "run.name=probe", "run.quiet=true", "run.report=false", "probe.samples=16", "probe.max_new_tokens=12",
        "probe.temperature=1.0", "finetuner.max_steps=3", "finetuner.save_steps=0", "finetuner.system_prompt=null"])
    result = lmforge.run(cfg)
    assert result.ran == ["probe", "finetuner"]
    probe = result.artifacts["probe"]
    report = json.loads((probe / "knowledge_report.json").read_text())
    assert (report["known"], report["unknown"], report["inconsistent"]) == (2, 2, 2)
    assert [d["label"] for d in report["per_question"]] == [plan for _, _, plan in PLANTED]
    assert "| 2 | 2 | 2 |" in (probe / "knowledge_report.md").read_text()

    examples = [json.loads(line) for line in (probe / "sft.jsonl").read_text().splitlines()]
    for example, (question, reference, plan) in zip(examples, PLANTED):
        assert example["boundary"] == plan
        assert example["messages"][0] == {"role": "user", "content": question}
        reply = example["messages"][-1]["content"]
        if plan == "known":  # the model's own correct answer
            assert extract_answer(reply, "number") == str(reference) and "not sure" not in reply
        elif plan == "unknown":  # no guess at all: the guess it would make is wrong
            assert reply.startswith("I'm not sure") and extract_answer(reply, "number") is None
        else:  # doubt stated with the measured agreement (the majority answer in k of 16 tries)
            detail = report["per_question"][PLANTED.index((question, reference, plan))]
            assert reply.startswith("I'm not sure")
            assert f"{detail['agree']} of 16 tries" in reply and detail["agree"] < 12
    graded = [json.loads(line) for line in (probe / "completions.jsonl").read_text().splitlines()]
    assert len(graded) == 16 * len(PLANTED) and all("correct" in row for row in graded)
    # what the finetuner reads: the probe examples, then as many replayed ordinary examples (data.sft)
    assert len(load_conversations(probe / "sft.jsonl")) == 2 * len(PLANTED)
    assert [e["boundary"] for e in examples[len(PLANTED):]] == ["replay"] * len(PLANTED)
    finetuned = lmforge.artifacts.read_manifest(result.artifacts["finetuner"])
    assert finetuned["inputs"]["data"]["path"] == str((probe / "sft.jsonl").resolve())
    assert (result.artifacts["finetuner"] / "model.safetensors").is_file()


def test_every_gsm8k_reference_parses(real_data):
    from lmforge.plugins.lib.data import read_records

    records = read_records(real_data / "gsm8k_test.jsonl.gz")
    references = [extract_answer(r["answer"], "number") for r in records]
    assert len(records) == 1319 and None not in references
    assert references[0] == "18"  # "... #### 18"


@pytest.mark.slow
def test_finetuning_on_probe_data_teaches_the_model_to_say_it_is_not_sure(planted, tmp_path, tiny_context):
    """The loop closed: after SFT on the probe's data, the model still answers what it knew and says it is
    not sure where it was wrong or inconsistent (greedy decoding)."""
    from lmforge.plugins.finetuners.sft import SFTFinetuner
    from lmforge.plugins.samplers.hf_generate import HFGenerateSampler

    model, qa = planted
    probe, _ = lmforge.run_stage(SelfInterrogation(samples=16, max_new_tokens=12, temperature=1.0, seed=0),
                                 {"model": model, "prompts": qa}, tmp_path / "probe", tiny_context)
    tuned, _ = lmforge.run_stage(
        SFTFinetuner(max_steps=120, batch_size=6, learning_rate=2e-3, lr_scheduler="constant", save_steps=0),
        {"model": model, "data": probe / "sft.jsonl"}, tmp_path / "tuned", tiny_context)
    prompts = tmp_path / "questions.txt"
    prompts.write_text("".join(q + "\n" for q, _, _ in PLANTED))
    sampled, _ = lmforge.run_stage(HFGenerateSampler(do_sample=False, max_new_tokens=24, system_prompt=None),
                                   {"model": tuned, "prompts": prompts}, tmp_path / "answers", tiny_context)
    rows = [json.loads(line) for line in (sampled / "completions.jsonl").read_text().splitlines()]
    for row, (_, reference, plan) in zip(rows, PLANTED):
        if plan == "known":
            assert extract_answer(row["completion"], "number") == str(reference), row
        else:
            assert row["completion"].startswith("I'm not sure"), row
