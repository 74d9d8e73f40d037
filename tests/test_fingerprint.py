"""A stage's fingerprint covers exactly what shapes its artifact: its plugin and parameters, the config sections
it declares it reads (``Stage.reads``: the pretrainer's ``model``), its evaluators, the seed and its inputs.
So changing ``model.*`` re-runs the pretrainer (and what follows it) but not the cleaner or the tokenizer, and
adding an evaluator to a finished stage re-runs that stage."""

from __future__ import annotations

import lmforge


def _run(tmp_path, *overrides):
    return lmforge.run(lmforge.compose([
        f"run.root={tmp_path}", "run.name=fp", "run.quiet=true", "run.report=false", "hardware=cpu",
        "pipeline=pretrain_only", "cleaner=basic", "tokenizer=char", "evaluation.pretrainer=[]",
        "pretrainer.max_steps=2", "pretrainer.batch_size=2", "pretrainer.block_size=32", "pretrainer.save_steps=0",
        "pretrainer.eval_steps=0", "pretrainer.warmup_steps=0", f"pretrainer.cache_dir={tmp_path / 'cache'}",
        "model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1",
        "model.num_attention_heads=2", "model.num_key_value_heads=2", *overrides]))


def test_model_config_reruns_the_pretrainer_only_and_an_added_evaluator_its_stage(tmp_path):
    first = _run(tmp_path)
    assert first.ran == ["cleaner", "tokenizer", "pretrainer"]
    assert _run(tmp_path).skipped == ["cleaner", "tokenizer", "pretrainer"]

    changed = _run(tmp_path, "model.intermediate_size=96")
    assert changed.skipped == ["cleaner", "tokenizer"] and changed.ran == ["pretrainer"]

    held_out = lmforge.sample_data_path("raw_text.jsonl")
    evaluated = _run(tmp_path, "model.intermediate_size=96",
                     f"evaluation.pretrainer=[{{name: perplexity, text: {held_out}, max_documents: 2}}]")
    assert evaluated.ran == ["pretrainer"] and evaluated.skipped == ["cleaner", "tokenizer"]
    assert "eval/perplexity/perplexity" in evaluated.manifests["pretrainer"]["metrics"]


def test_only_the_pretrainer_declares_it_reads_the_model_config():
    reads = {kind: {e.load().reads for e in lmforge.registry().entries() if e.kind == kind}
             for kind in lmforge.STAGE_KINDS}
    assert reads.pop("pretrainer") == {("model",)}
    assert all(values == {()} for values in reads.values()), reads


def test_a_retrained_judge_changes_the_fingerprint_of_the_stage_it_judges(tmp_path):
    from lmforge.artifacts import write_json_atomic
    from lmforge.pipeline import stage_fingerprint

    stage = lmforge.registry().entry("sampler", "hf_generate").load()()
    cfg = {"evaluation": {"sampler": [{"name": "win_rate", "judge": "stage:reward_model"}]}}
    (tmp_path / "reward_model").mkdir()

    def judged_by(judge_fingerprint):
        write_json_atomic(tmp_path / "reward_model" / "manifest.json", {"fingerprint": judge_fingerprint})
        return stage_fingerprint("sampler", stage, "hf_generate", cfg, {}, tmp_path)

    assert judged_by("a") == judged_by("a") != judged_by("b")
    # a stage whose evaluators name no stage keeps the fingerprint it had before this rule existed
    plain = stage_fingerprint("sampler", stage, "hf_generate", {}, {}, tmp_path)
    assert plain == stage_fingerprint("sampler", stage, "hf_generate", {}, {})
