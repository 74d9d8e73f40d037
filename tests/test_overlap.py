"""The overlap check made when a run is planned: held-out items found in the training data of their stage
(exact after normalisation — case, punctuation, operand order — or by n-gram), in the manifest and the
report, and `evaluation.on_overlap=error` stopping the run before any stage runs.

The small files here reproduce the overlap the bundled data had (identity prompts asked in SFT, sums
held out with their operands swapped), so the check is tested on that, not on the bundled files."""

from __future__ import annotations

import json
from dataclasses import dataclass

import lmforge
import pytest
from lmforge.cli import main
from lmforge.plugins.evaluators.overlap import check_overlap, lineage
from lmforge.plugins.lib.overlap import OverlapIndex, canonical_arithmetic, words

LONG = "Tell me the story of the old fox who jumped over the lazy dog early in the morning before breakfast"
HELD_OUT = ["Who are you?", "What is 3 + 1?", "What is 5 + 2?", "What is 2 plus 6?", "Add 35 and 10.",
            "What is the capital of France?", LONG, "What is 5 - 3?"]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _chat(question, answer):
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def files(tmp_path):
    return {
        "prompts": _jsonl(tmp_path / "prompts.jsonl", [{"prompt": p, "reference": "x"} for p in HELD_OUT]),
        "sft": _jsonl(tmp_path / "sft.jsonl", [
            _chat("Who are you?", "I am {{name}}, an AI assistant developed by {{author}}."),
            _chat("what is 1+3", "1 plus 3 is 4."), _chat("What is 2 × 5?", "2 times 5 is 10."),
            _chat("Add 10 and 35.", "45."), _chat("What is 3 - 5?", "-2.")]),
        "pairs": _jsonl(tmp_path / "pairs.jsonl", [
            {"prompt": [{"role": "system", "content": "You are Forge."}, {"role": "user", "content": "What is 6 plus 2?"}],
             "chosen": [{"role": "assistant", "content": "8."}], "rejected": [{"role": "assistant", "content": "9."}]}]),
        "raw": _jsonl(tmp_path / "raw.jsonl", [
            {"text": "An old tale. Tell me the story of the old fox who jumped over the lazy dog early in the day."},
            {"text": "Paris is the capital of France, and other facts."}]),
    }


def test_normalisation_puts_sums_and_products_in_one_order():
    same = [("What is 3 + 1?", "what is 1 + 3"), ("What is 3 + 1?", "What is 1 plus 3?"), ("7×6", "6 * 7"),
            ("Add 35 and 10.", "add 10 and 35"), ("1 + 2 + 3", "3 + 1 + 2"), ("What's 2.5 + 10?", "what's 10 + 2.5")]
    for a, b in same:
        assert words(a, commutative=True) == words(b, commutative=True), (a, b)
    different = [("What is 5 - 3?", "What is 3 - 5?"), ("1 + 3", "1 × 3"), ("6 / 3", "3 / 6"), ("5 - 3", "5 / 3")]
    for a, b in different:
        assert words(a, commutative=True) != words(b, commutative=True), (a, b)
    assert canonical_arithmetic("Is 10 + 2 = 12? Call 555-1234.") == "Is 2 plus 10 = 12? Call 555 minus 1234."
    assert words("Don't  SHOUT, café!") == ["don", "t", "shout", "cafe"]  # the cleaner's normalisation


def test_index_matches_exact_and_by_ngram():
    index = OverlapIndex(n=5, commutative=True)
    short, long = index.add("a", "What is 3 + 1?"), index.add("b", "one two three four five six")
    assert index.matches("WHAT is 1 plus 3") == {short: ("exact", "what is 1 plus 3")}
    assert index.matches("So what is 1 + 3, then?") == {short: ("ngram", "what is 1 plus 3")}  # inside a longer text
    assert index.matches("x two three four five six y") == {long: ("ngram", "two three four five six")}
    assert index.matches("one two three four") == {}
    assert index.first_match("so: two three four five six") == "two three four five six"


def test_lineage_follows_the_wiring_back():
    stages = {"cleaner": {"text": "raw"}, "tokenizer": {"text": "stage:cleaner"},
              "pretrainer": {"text": "stage:cleaner", "tokenizer": "stage:tokenizer"},
              "side": {"model": "stage:pretrainer", "data": "other.jsonl"},
              "finetuner": {"model": "stage:pretrainer", "data": [{"path": "stage:side/x.jsonl"}, "sft.jsonl"]},
              "sampler": {"model": "stage:finetuner", "prompts": "p.jsonl"}}
    assert lineage("finetuner", stages) == ["cleaner", "tokenizer", "pretrainer", "side", "finetuner"]
    assert lineage("pretrainer", stages) == ["cleaner", "tokenizer", "pretrainer"]


def test_finds_todays_kind_of_overlap_per_stage(files):
    """Identity prompts asked in SFT, sums with swapped operands, a pair's question, a pretraining n-gram."""
    cfg = lmforge.resolve_config(lmforge.compose([
        "pipeline=full", "~pipeline.stages.preferences", f"data.raw_text={files['raw']}", f"data.sft={files['sft']}",
        f"data.preferences={files['pairs']}",
        f"evaluation.pretrainer=[{{name: answers, mode: continuation, prompts: {files['prompts']}}}]",
        f"evaluation.finetuner=[{{name: answers, prompts: {files['prompts']}}}]",
        (f"evaluation.aligner=[{{name: answers, prompts: {files['prompts']}}}, "
         f"{{name: win_rate, prompts: {files['prompts']}, limit: 3}}]")]))
    found = check_overlap(cfg)
    overlapping = {stage: {e["item"] for e in result["examples"]} for stage, result in found.items()}
    assert found["pretrainer"]["items"] == len(HELD_OUT)
    assert overlapping["pretrainer"] == {LONG}  # a 13-gram of the raw text; no chat data yet
    assert overlapping["finetuner"] == {"Who are you?", "What is 3 + 1?", "Add 35 and 10.", LONG}
    assert found["finetuner"]["exact"] == 3 and found["finetuner"]["ngram"] == 1
    assert found["aligner"]["overlapping"] == 5  # and the pair's "What is 6 plus 2?"
    assert found["aligner"]["evaluators"] == {"answers": {"items": 8, "overlapping": 5},
                                              "win_rate": {"items": 3, "overlapping": 2}}
    example = next(e for e in found["finetuner"]["examples"] if e["item"] == "What is 3 + 1?")
    assert example["match"] == "exact" and example["training_text"] == "what is 1+3" and "sft.jsonl" in example["where"]
    assert "pipeline.stages.finetuner.data" in found["finetuner"]["inputs"]
    assert "What is 5 - 3?" not in overlapping["aligner"] and "What is 5 + 2?" not in overlapping["aligner"]
    assert found["finetuner"]["partly_read"] == []
    cfg["pipeline"]["stages"]["sampler"]["prompts"] = files["prompts"]  # the sampler is asked them: not training
    cfg["evaluation"]["sampler"] = [{"name": "answers", "prompts": files["prompts"]}]
    assert check_overlap(cfg)["sampler"]["overlapping"] == 5
    cfg["evaluation"]["finetuner"] = [{"name": "answers", "prompts": "stage:preferences/prompts.jsonl"}]
    assert "finetuner" not in check_overlap(cfg)  # its prompts are a file the run has not made yet: not checked
    assert check_overlap(cfg, max_mb=1e-5)["pretrainer"]["partly_read"] == ["pipeline.stages.cleaner.text"]


@dataclass
class ProbeConfig:
    prompts: str = ""


class Probe(lmforge.Evaluator):
    """An evaluator that needs no model: its held-out items are a file's prompts."""

    name = "probe"
    config_class = ProbeConfig

    def held_out_items(self):
        return [json.loads(line)["prompt"] for line in open(self.config.prompts)]

    def evaluate(self, artifact, inputs, context):
        return {"asked": 1.0}


def _run_args(tmp_path, files, *extra):
    return ["pipeline=clean_only", "cleaner=basic", "cleaner.steps=[normalize]", f"run.root={tmp_path}",
            f"data.raw_text={files['raw']}", f"evaluation.cleaner=[{{name: probe, prompts: {files['prompts']}}}]", *extra]


def test_manifest_eval_json_and_report_say_how_many_overlap(tmp_path, files, capsys):
    with lmforge.registered("evaluator", "probe", Probe):
        result = lmforge.run(lmforge.compose(_run_args(tmp_path, files)))
    assert "lmforge: warning: evaluation.cleaner: 1 of 8 held-out items are in the stage's training data, e.g. probe: " \
        '"Tell me the story' in capsys.readouterr().err
    manifest = result.manifests["cleaner"]
    assert manifest["metrics"]["eval/overlap/items"] == 8 and manifest["metrics"]["eval/overlap/overlapping"] == 1
    overlap = json.loads((result.artifacts["cleaner"] / "eval.json").read_text())["overlap"]
    assert overlap["examples"][0]["item"] == LONG and overlap["examples"][0]["match"] == "ngram"
    report = (result.run_dir / "report.md").read_text()
    assert "**cleaner**: overlap with training data: 1 of 8 held-out items, e.g. \"Tell me the story" in report


def test_on_overlap_error_stops_before_any_stage_runs(tmp_path, files, capsys):
    with lmforge.registered("evaluator", "probe", Probe), pytest.raises(SystemExit) as exit_info:
        main(["run", *_run_args(tmp_path, files, "evaluation.on_overlap=error")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluation.cleaner" in err[0] and "probe" in err[0] and "Tell me the story" in err[0]
    assert not (tmp_path / "default" / "cleaner").exists()
    with lmforge.registered("evaluator", "probe", Probe), pytest.raises(lmforge.ConfigError, match="on_overlap"):
        lmforge.run(lmforge.compose(_run_args(tmp_path, files, "evaluation.on_overlap=maybe")))
