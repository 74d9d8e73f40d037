"""The shared trainer knobs (plugins/lib/training.py) on real TRL trainers: one-line validation of every knob,
training by epochs, gradient checkpointing (same loss, recomputed activations), load dtype, and LoRA on an
aligner with the adapter-disabled base as DPO's reference (no second model) that still learns.

The learning signal is the one tests/test_aligner_pref.py uses: real GSM8K solutions preferred to the same
solutions in capitals, which a tiny random model picks up in a few steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import lmforge
import pytest
from lmforge.errors import ConfigError

# the learning signal and helpers of tests/test_aligner_pref.py
from test_aligner_pref import _context, _metrics
from test_aligner_pref import _shouting_pairs as _pairs
from test_aligner_pref import _write_jsonl as _write


def _dpo(**params):
    from lmforge.plugins.aligners.dpo import DPOAligner

    defaults = {"batch_size": 4, "learning_rate": 1e-3, "max_length": 128, "save_steps": 0, "logging_steps": 1}
    return DPOAligner(**{**defaults, **params})


# --- validation ---------------------------------------------------------------------------------------------

def _aligner(name):
    from lmforge.plugins.aligners.grpo import GRPOAligner
    from lmforge.plugins.aligners.kto import KTOAligner
    from lmforge.plugins.aligners.orpo import ORPOAligner
    from lmforge.plugins.aligners.reward_model import RewardModelTrainer
    from lmforge.plugins.finetuners.sft import SFTFinetuner

    return {"dpo": _dpo, "sft": SFTFinetuner, "kto": KTOAligner, "orpo": ORPOAligner, "grpo": GRPOAligner,
            "reward_model": RewardModelTrainer}[name]


@pytest.mark.parametrize(("name", "params", "message"), [
    ("dpo", {"batch_size": 0}, r"^aligner\.batch_size: must be > 0, got 0$"),
    ("dpo", {"max_steps": -1}, r"^aligner\.max_steps: -1; expected max_steps > 0, or epochs > 0 with max_steps: 0$"),
    ("dpo", {"epochs": 2}, r"^aligner\.epochs: 2\.0 with max_steps: 20; train by one of them: set max_steps=0"),
    ("dpo", {"max_steps": 0}, r"^aligner\.max_steps: 0 with epochs: 0; expected max_steps > 0 or epochs > 0$"),
    ("sft", {"lr_scheduler": "cosin"}, r"^finetuner\.lr_scheduler: unknown 'cosin'.*did you mean 'cosine'"),
    ("kto", {"dtype": "bf32"}, r"^aligner\.dtype: unknown 'bf32'.*one of: auto, bf16, fp16, fp32"),
    ("orpo", {"learning_rate": 0}, r"^aligner\.learning_rate: must be > 0, got 0(\.0)?$"),
    ("reward_model", {"eval_fraction": 1.0}, r"^aligner\.eval_fraction: 1\.0; expected a fraction in \[0, 1\)$"),
    ("grpo", {"method": "lora", "lora_r": 0}, r"^aligner\.lora_r: must be > 0, got 0$"),
    ("grpo", {"warmup_steps": 2.5}, r"^aligner\.warmup_steps: 2\.5; expected a step count, or a fraction"),
    ("kto", {"batch_size": 1}, r"^aligner\.batch_size: 1; KTO needs at least 2 examples per batch"),
    ("grpo", {"batch_size": 6, "num_generations": 4}, r"^aligner\.batch_size: batch_size x grad_accum \(6 x 1\)"),
])
def test_every_knob_is_checked_when_the_params_are_built(name, params, message):
    with pytest.raises(ConfigError, match=message):
        _aligner(name)(**params)


def test_a_bad_knob_fails_the_pipeline_before_any_stage_runs(tmp_path):
    cfg = lmforge.compose([f"run.root={tmp_path}", "aligner.grad_accum=0"])
    with pytest.raises(ConfigError, match=r"^aligner\.grad_accum: must be > 0, got 0$"):
        lmforge.run(cfg)
    assert not list(tmp_path.rglob("manifest.json"))


def test_every_trl_stage_takes_the_shared_knobs():
    from lmforge.plugins.lib.training import TrainerConfig

    shared = set(TrainerConfig.__dataclass_fields__)
    for option in ("finetuner=sft", "aligner=dpo", "aligner=orpo", "aligner=kto", "aligner=grpo", "aligner=rloo",
                   "aligner=reward_model"):
        kind = option.split("=")[0]
        params = lmforge.stage(kind, lmforge.compose([option])).config
        assert shared <= set(type(params).__dataclass_fields__), option


# --- training -----------------------------------------------------------------------------------------------

def test_epochs_train_whole_passes_over_the_data(real_data, tiny_model_dir, tiny_context, tmp_path):
    data = _write(tmp_path / "pairs.jsonl", _pairs(real_data, 12))
    out = tmp_path / "dpo"
    lmforge.run_stage(_dpo(max_steps=0, epochs=2, max_length=512), {"model": tiny_model_dir, "data": data}, out,
                      _context(tiny_context, tmp_path / "work"))
    trained = [m for m in _metrics(out) if "loss" in m]
    assert [m["step"] for m in trained] == [1, 2, 3, 4, 5, 6]  # 12 pairs / batch 4 = 3 steps an epoch, 2 epochs
    assert trained[-1]["epoch"] == pytest.approx(2.0)


def test_gradient_checkpointing_recomputes_without_changing_the_loss(real_data, tiny_model_dir, tiny_context,
                                                                     tmp_path):
    from lmforge.plugins.aligners.dpo import build_dpo

    data = _write(tmp_path / "pairs.jsonl", _pairs(real_data, 8))
    losses = {}
    for checkpointing in (False, True):
        cfg = _dpo(max_steps=2, gradient_checkpointing=checkpointing).config
        lmforge.plugins.lib.models.seed_everything(0)
        context = _context(tiny_context, tmp_path / f"work-{checkpointing}")
        trainer = build_dpo(cfg, {"model": tiny_model_dir, "data": data}, context)
        trainer.train()
        assert trainer.model.is_gradient_checkpointing is checkpointing
        losses[checkpointing] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_load_dtype_sets_policy_and_reference_weights(real_data, tiny_model_dir, tiny_context, tmp_path):
    import torch
    from lmforge.plugins.aligners.dpo import build_dpo

    data = _write(tmp_path / "pairs.jsonl", _pairs(real_data, 8))
    for dtype, expected in (("auto", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        cfg = _dpo(max_steps=1, dtype=dtype).config
        trainer = build_dpo(cfg, {"model": tiny_model_dir, "data": data}, _context(tiny_context, tmp_path / dtype))
        assert trainer.model.dtype == expected and trainer.ref_model.dtype == expected, dtype
        assert not any(p.requires_grad for p in trainer.ref_model.parameters())


def test_dpo_with_lora_uses_the_adapter_disabled_base_as_reference_and_learns(real_data, tiny_model_dir,
                                                                             tiny_context, tmp_path):
    from lmforge.plugins.aligners.dpo import build_dpo
    from safetensors.torch import load_file

    data = _write(tmp_path / "pairs.jsonl", _pairs(real_data, 64))
    stage = _dpo(max_steps=12, batch_size=8, learning_rate=1e-2, eval_fraction=0.25, logging_steps=4,
                 method="lora", lora_r=8, lora_alpha=16)
    trainer = build_dpo(stage.config, {"model": tiny_model_dir, "data": data}, _context(tiny_context, tmp_path / "w"))
    assert trainer.ref_model is None and trainer.model.peft_config  # no second model: the adapter is switched off
    del trainer

    out = tmp_path / "dpo-lora"
    _, manifest = lmforge.run_stage(stage, {"model": tiny_model_dir, "data": data}, out,
                                    _context(tiny_context, tmp_path / "work"))
    metrics = manifest["metrics"]
    print(f"DPO+LoRA held-out: {metrics}")
    assert metrics["eval_rewards/accuracies_start"] == 0.0  # policy == reference before training
    assert metrics["eval_rewards/accuracies_end"] >= 0.8 and metrics["eval_rewards/margins_end"] > 0.1
    assert metrics["eval_loss_end"] < metrics["eval_loss_start"]
    assert metrics["lora_merge_max_abs_diff"] < 1e-4
    weights, base = load_file(str(out / "model.safetensors")), load_file(str(tiny_model_dir / "model.safetensors"))
    assert weights.keys() == base.keys()  # a plain model dir: the adapter is merged, no lora_ keys
    assert any(not (weights[k] == base[k]).all() for k in base)


def test_dpo_completions_end_at_the_end_of_turn_token(real_data, tiny_model_dir, tiny_context, tmp_path):
    from lmforge.plugins.aligners.dpo import build_dpo

    data = _write(tmp_path / "pairs.jsonl", _pairs(real_data, 8))
    trainer = build_dpo(_dpo(max_steps=1, eval_fraction=0.25).config, {"model": tiny_model_dir, "data": data},
                        _context(tiny_context, tmp_path / "work"))
    end = trainer.processing_class.convert_tokens_to_ids("<|end|>")
    for dataset in (trainer.train_dataset, trainer.eval_dataset):
        for row in dataset:
            assert row["chosen_ids"][-1] == end and row["rejected_ids"][-1] == end  # not the template's "\n"
            assert row["chosen_ids"].count(end) == 1


def test_kto_completions_end_at_the_end_of_turn_token(real_data, tiny_model_dir, tiny_context, tmp_path):
    from lmforge.plugins.aligners.kto import KTOConfig, build_kto

    data = _write(tmp_path / "pairs.jsonl", _pairs(real_data, 8))
    trainer = build_kto(KTOConfig(max_steps=1), {"model": tiny_model_dir, "data": data},
                        _context(tiny_context, tmp_path / "work"))
    end = trainer.processing_class.convert_tokens_to_ids("<|end|>")
    assert all(row["completion_ids"][-1] == end and row["KL_completion_ids"][-1] == end
               for row in trainer.train_dataset)


# --- plain-text preferences on a base model (no chat template) ----------------------------------------------

@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory):
    from test_outside_models import build_gpt2_style

    text = Path(lmforge.sample_data_path("tinyshakespeare.txt")).read_text()[:20_000]
    return build_gpt2_style(tmp_path_factory.mktemp("base") / "gpt2-style", text)


def _text_pairs(count: int, start: int = 0) -> list[dict]:
    lines = [line for line in Path(lmforge.sample_data_path("tinyshakespeare.txt")).read_text().splitlines()
             if len(line) > 30][start:start + count]
    return [{"prompt": f"Line {i}:", "chosen": " " + line, "rejected": " " + line.upper()}
            for i, line in enumerate(lines)]


@pytest.mark.parametrize("aligner", ["dpo", "orpo", "kto"])
def test_plain_string_preferences_train_a_base_model_without_a_chat_template(aligner, base_model_dir, tiny_context,
                                                                             tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(base_model_dir)).chat_template is None
    data = _write(tmp_path / "pairs.jsonl", _text_pairs(32))
    params = {"max_steps": 8, "batch_size": 8, "learning_rate": 5e-3, "max_length": 96, "save_steps": 0}
    stage = _aligner(aligner)(**params, **({"max_prompt_length": 16} if aligner == "orpo" else {}))
    out = tmp_path / aligner
    lmforge.run_stage(stage, {"model": base_model_dir, "data": data}, out, _context(tiny_context, tmp_path / "w"))

    tokenizer = AutoTokenizer.from_pretrained(str(out))

    def margin(model_dir) -> float:  # summed log-probability of chosen minus rejected, held-out pairs
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        total = 0.0
        for pair in _text_pairs(8, start=200):
            prompt = len(tokenizer(pair["prompt"])["input_ids"])
            for sign, key in ((1, "chosen"), (-1, "rejected")):
                ids = torch.tensor([tokenizer(pair["prompt"] + pair[key])["input_ids"]])
                with torch.no_grad():
                    logps = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
                total += sign * float(logps[prompt - 1:].sum())
        return total / 8

    before, after = margin(base_model_dir), margin(out)
    print(f"{aligner} on plain strings: held-out margin {before:.2f} -> {after:.2f}")
    assert after > before + 1.0


def test_the_25_line_aligner_of_the_docs_trains(real_data, tiny_model_dir, tiny_context, tmp_path):
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "write-a-plugin.md").read_text()
    section = text.split("## An aligner in 25 lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 40
    namespace: dict = {}
    exec(compile(code, "my_simpo.py", "exec"), namespace)  # noqa: S102 (the documented example, run as written)
    data = _write(tmp_path / "pairs.jsonl", _pairs(real_data, 32))  # long questions: prompts that fill max_length
    stage = namespace["SimPOAligner"](max_steps=8, batch_size=4, learning_rate=1e-3, max_length=128, save_steps=0,
                                      logging_steps=1, eval_fraction=0.25)
    out = tmp_path / "simpo"
    _, manifest = lmforge.run_stage(stage, {"model": tiny_model_dir, "data": data}, out,
                                    _context(tiny_context, tmp_path / "work"))
    losses = [m["loss"] for m in _metrics(out) if "loss" in m]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses), losses  # no answer cut away: no NaN
    metrics = manifest["metrics"]
    assert metrics["eval_loss_end"] < metrics["eval_loss_start"], metrics
    assert (out / "model.safetensors").is_file()


def test_a_stage_call_without_a_work_dir_keeps_its_checkpoints_beside_its_output(real_data, tiny_model_dir,
                                                                                 tmp_path, monkeypatch):
    """A library call (a RunContext with no work dir) neither resumes another run's checkpoints from the shared
    temporary directory nor leaves its own there: they go to <output>.work and go when the stage completes."""
    from lmforge.plugins.aligners.reward_model import RewardModelTrainer

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    stale = tmp_path / "tmp" / "lmforge-aligner" / "checkpoint-3"  # another model's, as an earlier call left it
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text('{"global_step": 3}')
    context = lmforge.RunContext(stage_name="aligner", quiet=True,
                                 hardware=lmforge.Hardware(device="cpu", precision="fp32"))
    data = _write(tmp_path / "pairs.jsonl", _pairs(real_data, 16))
    out = tmp_path / "rm"
    _, manifest = lmforge.run_stage(RewardModelTrainer(max_steps=2, batch_size=4, eval_fraction=0.0, save_steps=1),
                                    {"model": tiny_model_dir, "data": data}, out, context)
    assert manifest["metrics"]["train_loss"] > 0 and context.work_dir is None
    assert not (tmp_path / "rm.work").exists() and stale.exists()
