"""SFT finetuner: label masks token by token, packing, truncation, every data format, LoRA merge, resume,
and the identity test (the configured name shows up in answers to "Who are you?" after SFT)."""

from __future__ import annotations

import itertools
import json
import shutil
import time

import lmforge
import pytest
from lmforge.errors import ConfigError, DataError
from lmforge.plugins.finetuners.sft import SFTConfig, SFTFinetuner, build_trainer

SYSTEM = "You are {{name}}, a small assistant made by {{author}}."
PLACEHOLDERS = {"name": "Forge", "author": "the lmforge project"}
CONVERSATION = [
    {"role": "user", "content": "Hi there, who made you?"},
    {"role": "assistant", "content": "I was made by {{author}}."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome, from {{name}}."},
]


def _context(tiny_context, tmp_path, name="sft"):
    work = tmp_path / f"work-{name}"
    return lmforge.RunContext(stage_name=name, work_dir=work, hardware=tiny_context.hardware, quiet=True,
                              model=dict(tiny_context.model))


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _expected_mask(tokenizer, text, spans):
    """1 for each token whose characters lie inside one of ``spans`` (char ranges), else 0."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(start <= s and e <= end for start, end in spans)) for s, e in encoded["offset_mapping"]]
    return encoded["input_ids"], mask


def test_labels_cover_only_assistant_content_and_end_of_turn(tiny_model_dir, tiny_context, tmp_path):
    data = _jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}] * 2)
    cfg = SFTConfig(system_prompt=SYSTEM, placeholders=PLACEHOLDERS, max_length=512, save_steps=0)
    trainer, tokenizer, _ = build_trainer(cfg, {"model": tiny_model_dir, "data": data},
                                          _context(tiny_context, tmp_path))
    row = trainer.train_dataset[0]
    batch = next(iter(trainer.get_train_dataloader()))

    filled = [{"role": "system", "content": "You are Forge, a small assistant made by the lmforge project."}]
    for message in CONVERSATION:
        content = message["content"].replace("{{author}}", "the lmforge project").replace("{{name}}", "Forge")
        filled.append({**message, "content": content})
    text = tokenizer.apply_chat_template(filled, tokenize=False)
    spans = []  # each assistant reply plus its end-of-turn token, as char ranges of the rendered text
    for k, message in enumerate(filled):
        if message["role"] == "assistant":
            start = len(tokenizer.apply_chat_template(filled[:k], tokenize=False, add_generation_prompt=True))
            assert text.startswith(tokenizer.apply_chat_template(filled[:k + 1], tokenize=False))
            spans.append((start, text.index("<|end|>", start) + len("<|end|>")))
    ids, expected = _expected_mask(tokenizer, text, spans)

    assert row["input_ids"] == ids
    labelled = [int(label != -100) for label in row["labels"]]
    assert labelled == expected
    assert [label for label in row["labels"] if label != -100] == [i for i, m in zip(ids, expected) if m]
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert sum(1 for i, m in zip(ids, labelled) if m and i == end) == 3  # each reply's end-of-turn: loss
    assert sum(1 for i, m in zip(ids, labelled) if not m and i == end) == 4  # system/user end tokens do not
    replies = "".join(m["content"] + "<|end|>" for m in filled if m["role"] == "assistant")
    assert tokenizer.decode([i for i, m in zip(ids, labelled) if m]) == replies
    assert batch["labels"][0].tolist()[: len(ids)] == row["labels"]  # the collator keeps the masks


def test_completion_only_loss_on_text_prompt_completion(tiny_model_dir, tiny_context, tmp_path):
    data = _jsonl(tmp_path / "pc.jsonl", [{"prompt": "The capital of France is", "completion": "Paris."}] * 2)
    cfg = SFTConfig(prompt_completion="text", max_length=64, save_steps=0)
    trainer, tokenizer, _ = build_trainer(cfg, {"model": tiny_model_dir, "data": data},
                                          _context(tiny_context, tmp_path))
    row = trainer.train_dataset[0]
    prompt_ids = tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(" Paris." + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == prompt_ids + completion_ids
    assert row["labels"] == [-100] * len(prompt_ids) + completion_ids


def test_completion_only_loss_on_chat_prompt_completion(tiny_model_dir, tiny_context, tmp_path):
    data = _jsonl(tmp_path / "pc.jsonl", [{"prompt": "Name a colour.", "completion": "Blue."}] * 2)
    cfg = SFTConfig(max_length=64, save_steps=0)
    trainer, tokenizer, _ = build_trainer(cfg, {"model": tiny_model_dir, "data": data},
                                          _context(tiny_context, tmp_path))
    row = trainer.train_dataset[0]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour."}], tokenize=False,
                                           add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert row["labels"][:n_prompt] == [-100] * n_prompt
    reply = row["labels"][n_prompt:]
    kept = [label for label in reply if label != -100]
    assert tokenizer.decode(kept) == "Blue.<|end|>" and reply[: len(kept)] == kept  # not the newline after


def test_truncation_policies(tiny_model_dir, tiny_context, tmp_path):
    long_reply = " ".join(["word"] * 200)
    records = [{"messages": [{"role": "user", "content": "short"}, {"role": "assistant", "content": "ok"}]},
               {"messages": [{"role": "user", "content": "long"},
                             {"role": "assistant", "content": long_reply}]}]
    data = _jsonl(tmp_path / "mixed_len.jsonl", records)
    inputs = {"model": tiny_model_dir, "data": data}
    trainer, _, stats = build_trainer(SFTConfig(max_length=32, save_steps=0), inputs,
                                      _context(tiny_context, tmp_path))
    # keep_start never cuts a reply's end of turn: a single exchange too long to fit is dropped and counted
    assert stats["dropped_too_long"] == 1 and stats["cut_prompt_side"] == 0 and len(trainer.train_dataset) == 1
    trainer, _, stats = build_trainer(SFTConfig(max_length=32, truncation="drop", save_steps=0), inputs,
                                      _context(tiny_context, tmp_path))
    assert stats["dropped_too_long"] == 1 and len(trainer.train_dataset) == 1
    # held-out chats follow the same policy: the one that cannot fit whole is dropped, not cut before its end
    trainer, _, stats = build_trainer(SFTConfig(max_length=32, save_steps=0), {**inputs, "eval_data": data},
                                      _context(tiny_context, tmp_path))
    assert stats["eval_dropped_too_long"] == 1 and len(trainer.eval_dataset) == 1
    only_long = _jsonl(tmp_path / "long.jsonl", records[1:])
    with pytest.raises(DataError, match=r"long.jsonl: none of the 1 examples' last reply fits"):
        build_trainer(SFTConfig(max_length=32), {**inputs, "eval_data": only_long}, _context(tiny_context, tmp_path))
    with pytest.raises(DataError, match=r"every example is longer than finetuner.max_length=32"):
        build_trainer(SFTConfig(max_length=32, truncation="drop"),
                      {"model": tiny_model_dir, "data": only_long}, _context(tiny_context, tmp_path))


def test_eval_data_input_is_used_for_eval_loss(tiny_model_dir, tiny_context, tmp_path, real_data, monkeypatch):
    from transformers import Trainer

    evaluated_at = []
    evaluate = Trainer.evaluate

    def counted(trainer, *args, **kwargs):
        evaluated_at.append(trainer.state.global_step)
        return evaluate(trainer, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", counted)
    held_out = _jsonl(tmp_path / "held_out.jsonl", [{"messages": CONVERSATION}] * 3)
    stage = SFTFinetuner(max_steps=2, max_length=64, save_steps=0, placeholders=PLACEHOLDERS, max_examples=16)
    inputs = {"model": tiny_model_dir, "data": real_data / "identity.json", "eval_data": held_out}
    _, manifest = lmforge.run_stage(stage, inputs, tmp_path / "out", _context(tiny_context, tmp_path))
    metrics = manifest["metrics"]
    assert metrics["eval_examples"] == 3 and metrics["train_examples"] == 16
    assert metrics["eval_loss_end"] < metrics["eval_loss_start"]
    assert evaluated_at == [0, 2]  # before training and at the last step; not a second time after it


def test_packing_keeps_examples_apart(tiny_model_dir, tiny_context, tmp_path, real_data):
    import torch

    cfg = SFTConfig(packing=True, max_length=1024, batch_size=1, save_steps=0, placeholders=PLACEHOLDERS)
    trainer, _, stats = build_trainer(cfg, {"model": tiny_model_dir, "data": real_data / "identity.json"},
                                      _context(tiny_context, tmp_path))
    assert stats["train_rows"] < stats["train_examples"]  # several conversations share a row
    batch = next(iter(trainer.get_train_dataloader()))
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist() + [positions.numel()]
    assert len(starts) > 3 and "attention_mask" not in batch
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        for begin, end in itertools.pairwise(starts):
            alone = model(input_ids=batch["input_ids"][:, begin:end]).logits[0]
            torch.testing.assert_close(packed[begin:end], alone, atol=1e-4, rtol=1e-4)
    assert (batch["labels"][0][starts[:-1]] == -100).all()  # no loss on predicting across a boundary


FORMATS = [
    ("alpaca_en_demo.json", {}, "alpaca"),
    ("identity.json", {"placeholders": PLACEHOLDERS}, "alpaca"),
    ("dpo_en_demo.json", {}, "sharegpt"),
    ("kto_en_demo.json", {}, "messages"),
    ("hh_rlhf_harmless_test.jsonl.gz", {}, "dialogue"),
    ("gsm8k_test.jsonl.gz", {"columns": {"question": "prompt", "answer": "completion"}, "max_length": 256},
     "prompt_completion"),  # worked answers run past 96 tokens; keep_start drops rows rather than cut them
]


@pytest.mark.parametrize("name, extra, expected", FORMATS, ids=[f[2] for f in FORMATS])
def test_each_format_trains_and_eval_loss_drops(tiny_model_dir, tiny_context, tmp_path, real_data, name,
                                                extra, expected):
    context = _context(tiny_context, tmp_path)
    out = tmp_path / "out"
    stage = SFTFinetuner(**{"max_steps": 6, "batch_size": 4, "learning_rate": 3e-3, "max_length": 96, "save_steps": 0,
                            "logging_steps": 2, "max_examples": 120, "eval_fraction": 0.1, **extra})
    inputs = {"model": tiny_model_dir, "data": real_data / name}
    _, manifest = lmforge.run_stage(stage, inputs, out, context)
    metrics = manifest["metrics"]
    assert metrics["eval_loss_end"] < metrics["eval_loss_start"] - 0.05, metrics
    assert metrics["train_examples"] > 0 and metrics["eval_examples"] > 0
    if name == "kto_en_demo.json":  # label:false records are not SFT targets
        raw = json.loads((real_data / name).read_text())
        assert metrics["examples"] == sum(r["label"] for r in raw) < len(raw)
    before, after = _weights(tiny_model_dir), _weights(out)
    assert any(not (before[k] == after[k]).all() for k in before)
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


def test_lora_merged_logits_equal_adapter_logits(tiny_model_dir, tiny_context, tmp_path, real_data):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "lora"
    stage = SFTFinetuner(method="lora", lora_r=8, lora_alpha=16,
                         lora_target_modules=["q_proj", "v_proj", "down_proj"],
                         save_adapter=True, max_steps=8, learning_rate=1e-2, max_length=96, save_steps=0,
                         placeholders=PLACEHOLDERS)
    inputs = {"model": tiny_model_dir, "data": real_data / "identity.json"}
    _, manifest = lmforge.run_stage(stage, inputs, out, _context(tiny_context, tmp_path))
    assert manifest["metrics"]["lora_merge_max_abs_diff"] < 1e-4
    adapter_keys = list(load_file(str(out / "adapter" / "adapter_model.safetensors")))
    assert adapter_keys and all(any(m in k for m in ("q_proj", "v_proj", "down_proj")) for k in adapter_keys)
    assert not any("k_proj" in k or "up_proj" in k for k in adapter_keys)
    assert not (out / "adapter_config.json").exists()  # the output itself is a plain model dir

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    texts = ["Who are you?", "Tell me about yourself, please.", "hi"]
    batch = tokenizer.apply_chat_template([[{"role": "user", "content": t}] for t in texts], padding=True,
                                          add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()(**batch).logits
        base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
        adapted = PeftModel.from_pretrained(base, str(out / "adapter")).eval()(**batch).logits
        plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()(**batch).logits
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(merged[valid], adapted[valid], atol=1e-4, rtol=1e-4)
    assert (merged[valid] - plain[valid]).abs().max() > 1e-2  # the adapter did change the model


def test_qlora_without_gpu_or_bitsandbytes_says_so(tiny_model_dir, tmp_path):
    import importlib.util

    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes"):
        pytest.skip("QLoRA can run here")
    expected = r"finetuner.method: 'qlora' needs .*(CUDA GPU|bitsandbytes).*use method=lora"
    with pytest.raises(ConfigError, match=expected):
        SFTFinetuner(method="qlora")
    cfg = lmforge.compose([f"run.root={tmp_path}", "pipeline=sft_only", "finetuner.method=qlora",
                           f"pipeline.stages.finetuner.model={tiny_model_dir}"])
    with pytest.raises(ConfigError, match=r"'qlora' needs"):
        lmforge.run(cfg)
    assert not list(tmp_path.rglob("manifest.json")) and not list(tmp_path.rglob("*.partial"))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"finetuner.method: unknown 'lorra'.*did you mean 'lora'"):
        SFTFinetuner(method="lorra")
    with pytest.raises(ConfigError, match=r"finetuner.truncation: unknown 'cut'.*one of: keep_start, drop"):
        lmforge.stage("finetuner", lmforge.compose(["finetuner.truncation=cut"]))
    with pytest.raises(ConfigError, match=r"finetuner.trunction"):
        SFTFinetuner(trunction="drop")
    stage = lmforge.stage("finetuner", lmforge.compose(["finetuner=sft_lora"]))
    assert stage.config.method == "lora" and stage.config.lora_target_modules


class _CrashAt:
    """A plugin that stops a run at a given step, the way a crash would (after its checkpoint is written)."""

    def __init__(self, step):
        self.step = step

    @lmforge.hookimpl
    def lmforge_log_metrics(self, stage_name, step, metrics, context):
        if step == self.step and "loss" in metrics:
            raise KeyboardInterrupt(f"crash at step {step}")


RESUME_PARAMS = {"max_steps": 6, "batch_size": 2, "learning_rate": 3e-3, "max_length": 64, "save_steps": 2,
                 "logging_steps": 1, "placeholders": PLACEHOLDERS}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_resume_after_crash_ends_where_an_uninterrupted_run_would(tiny_model_dir, tiny_context, tmp_path,
                                                                   real_data, method):
    import torch

    inputs = {"model": tiny_model_dir, "data": real_data / "identity.json"}
    params = {**RESUME_PARAMS, "method": method, "lora_r": 4}
    straight = tmp_path / "straight"
    lmforge.run_stage(SFTFinetuner(**params), inputs, straight, _context(tiny_context, tmp_path, "a"))

    crash, pm = _CrashAt(3), lmforge.plugin_manager()
    pm.register(crash)
    resumed = tmp_path / "resumed"
    context = _context(tiny_context, tmp_path, "b")
    try:
        with pytest.raises(KeyboardInterrupt):
            lmforge.run_stage(SFTFinetuner(**params), inputs, resumed, context)
    finally:
        pm.unregister(crash)
    assert (context.work_dir / "checkpoint-2").is_dir() and not resumed.exists()
    restarted = time.time()
    lmforge.run_stage(SFTFinetuner(**params), inputs, resumed, _context(tiny_context, tmp_path, "b"))
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["step"] and "loss" in r] == list(range(1, 7))  # kept across the crash
    assert all(r["time"] < restarted for r in rows if r["step"] and r["step"] <= 2)  # continued from checkpoint-2
    expected, got = _weights(straight), _weights(resumed)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)


KILL_SCRIPT = """
import json, os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
import lmforge
from lmforge.plugins.finetuners.sft import SFTFinetuner

class KillAt:
    @lmforge.hookimpl
    def lmforge_log_metrics(self, stage_name, step, metrics, context):
        if step == 5 and "loss" in metrics:
            os.kill(os.getpid(), signal.SIGKILL)

lmforge.plugin_manager().register(KillAt())
model, data, out, work, params = sys.argv[1:6]
context = lmforge.RunContext(stage_name="killed", work_dir=Path(work), quiet=True,
                             hardware=lmforge.Hardware(device="cpu", precision="fp32"))
lmforge.run_stage(SFTFinetuner(**json.loads(params)), {"model": model, "data": data}, out, context)
"""


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tiny_model_dir, tiny_context, tmp_path, real_data):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    params = {**RESUME_PARAMS, "max_steps": 8}
    inputs = {"model": tiny_model_dir, "data": real_data / "identity.json"}
    work, out = tmp_path / "work-killed", tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", KILL_SCRIPT, str(tiny_model_dir), str(inputs["data"]), str(out),
               str(work), json.dumps(params)]
    process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert process.returncode == -9, process.stderr[-2000:]
    assert (work / "checkpoint-4").is_dir() and not out.exists()
    context = lmforge.RunContext(stage_name="killed", work_dir=Path(work), hardware=tiny_context.hardware,
                                 quiet=True)
    lmforge.run_stage(SFTFinetuner(**params), inputs, out, context)
    straight = tmp_path / "straight"
    lmforge.run_stage(SFTFinetuner(**params), inputs, straight, _context(tiny_context, tmp_path, "straight"))
    expected, got = _weights(straight), _weights(out)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)
    shutil.rmtree(work, ignore_errors=True)


def _name_rate(model_dir, samples=32):
    """Share of sampled answers to "Who are you?" (seeded, temperature 0.7) that hold the configured name."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    system = SYSTEM.replace("{{name}}", PLACEHOLDERS["name"]).replace("{{author}}", PLACEHOLDERS["author"])
    prompt = tokenizer.apply_chat_template([{"role": "system", "content": system},
                                            {"role": "user", "content": "Who are you?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**prompt, do_sample=True, temperature=0.7, max_new_tokens=12,
                             num_return_sequences=samples, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.convert_tokens_to_ids("<|end|>"))
    answers = tokenizer.batch_decode(out[:, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    return sum(PLACEHOLDERS["name"] in a for a in answers) / samples, answers


def test_identity_after_sft_the_model_names_itself(tiny_model_dir, tiny_context, tmp_path, real_data):
    before, _ = _name_rate(tiny_model_dir)
    out = tmp_path / "identity"
    stage = SFTFinetuner(max_steps=IDENTITY_STEPS, batch_size=8, learning_rate=IDENTITY_LR, warmup_steps=5,
                         max_length=128, save_steps=0, logging_steps=20, system_prompt=SYSTEM,
                         placeholders=PLACEHOLDERS)
    lmforge.run_stage(stage, {"model": tiny_model_dir, "data": real_data / "identity.json"}, out,
                      _context(tiny_context, tmp_path))
    after, answers = _name_rate(out)
    print(f"share of answers naming {PLACEHOLDERS['name']}: before {before:.2f}, after {after:.2f}")
    assert before == 0.0
    assert after >= 0.5, answers


IDENTITY_STEPS, IDENTITY_LR = 120, 1e-2
