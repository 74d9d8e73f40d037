"""Pretrainer: char tokenizer, token cache, nanoGPT split, windows, schedules, depth dial, the lean loop
(learning, grad accumulation, exact resume after SIGKILL, 2-process DDP) and the HF Trainer plugin."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lmforge
import pytest
from lmforge.plugins.pretrainers import config as pretrain_config
from lmforge.plugins.pretrainers import corpus as pretrain_corpus
from lmforge.plugins.pretrainers import model as pretrain_model
from lmforge.plugins.pretrainers import schedule as pretrain_schedule
from lmforge.plugins.pretrainers import windows as pretrain_windows

MICRO = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64,
         "tie_word_embeddings": True}
LOOP = {"batch_size": 4, "block_size": 32, "val_fraction": 0.1, "learning_rate": 3e-3, "min_lr": 3e-4,
        "warmup_steps": 2, "eval_steps": 0, "logging_steps": 1}


def context(tmp_path: Path, name: str, **extra) -> lmforge.RunContext:
    return lmforge.RunContext(stage_name="pretrainer", hardware=lmforge.Hardware(device="cpu", precision="fp32"),
                              quiet=True, model=dict(MICRO), work_dir=tmp_path / f"work-{name}", **extra)


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        diff = (wa[key] - wb[key]).abs().max().item()
        assert diff <= atol, f"{key} differs by {diff}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_shakespeare) -> Path:
    """The first 60k characters of Tiny Shakespeare: real text, small enough for seconds-long runs."""
    path = tmp_path_factory.mktemp("pretrain") / "shakespeare_head.txt"
    path.write_text(tiny_shakespeare.read_text()[:60_000])
    return path


@pytest.fixture(scope="module")
def char_dir(corpus, tmp_path_factory) -> Path:
    from lmforge.plugins.tokenizers.char import CharTokenizer

    out = tmp_path_factory.mktemp("pretrain") / "char_tokenizer"
    lmforge.run_stage(CharTokenizer(), {"text": corpus}, out, lmforge.RunContext(quiet=True))
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("token_cache"))


def lean(**params):
    from lmforge.plugins.pretrainers.lean_loop import LeanPretrainer

    return LeanPretrainer(**{**LOOP, **params})


# ---------------------------------------------------------------- tokenizer and data

def test_char_tokenizer_loads_with_autotokenizer_and_round_trips(char_dir, corpus):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(char_dir))
    text = corpus.read_text()
    assert len(tok) == 8 + len(set(text))  # specials + one token per distinct character
    sample = text[:500]
    ids = tok(sample, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(sample) and tok.decode(ids) == sample
    assert tok.convert_ids_to_tokens(tok("~", add_special_tokens=False)["input_ids"]) == ["<|unk|>"]
    assert tok.eos_token == "<|eos|>" and "<|assistant|>" in tok.all_special_tokens
    end = tok("<|end|>", add_special_tokens=False)["input_ids"]
    assert len(end) == 1  # special tokens stay whole, not split into characters


def test_char_tokenizer_chats_like_the_bpe_tokenizer(char_dir, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    char, bpe = AutoTokenizer.from_pretrained(str(char_dir)), AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "say <|end|> now"},
            {"role": "assistant", "content": "Hi."}]
    rendered = char.apply_chat_template(chat, tokenize=False)
    assert rendered == bpe.apply_chat_template(chat, tokenize=False)
    out = char.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert char.decode([i for i, m in zip(ids, mask) if m]) == "Hi.<|end|>"
    end_id = char.convert_tokens_to_ids("<|end|>")
    assert ids.count(end_id) == 3  # the user's typed "<|end|>" stays text, not an end-of-turn


def test_token_cache_is_keyed_by_tokenizer_and_data(char_dir, corpus, tiny_tokenizer_dir, tmp_path):
    import numpy as np
    from transformers import AutoTokenizer

    char = AutoTokenizer.from_pretrained(str(char_dir))
    tokens, meta = pretrain_corpus.tokenized_corpus(corpus, char_dir, char, "text", str(tmp_path))
    assert meta["tokens"] == len(corpus.read_text()) and meta["bytes"] == len(corpus.read_bytes())
    entry = tmp_path / meta["key"] / "index.json"
    stamp = entry.stat().st_mtime_ns
    again, meta_again = pretrain_corpus.tokenized_corpus(corpus, char_dir, char, "text", str(tmp_path))
    assert meta_again == meta and entry.stat().st_mtime_ns == stamp
    assert (np.asarray(again) == np.asarray(tokens)).all()
    bpe = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    _, meta_bpe = pretrain_corpus.tokenized_corpus(corpus, tiny_tokenizer_dir, bpe, "text", str(tmp_path))
    other = tmp_path / "other.txt"
    other.write_text("To be, or not to be.")
    _, meta_other = pretrain_corpus.tokenized_corpus(other, char_dir, char, "text", str(tmp_path))
    assert len({meta["key"], meta_bpe["key"], meta_other["key"]}) == 3
    assert meta_bpe["tokens"] < meta["tokens"]


def test_documents_are_joined_with_eos_between(char_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(char_dir))
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in ["ab", "c", "de"]))
    tokens, meta = pretrain_corpus.tokenized_corpus(data, char_dir, tok, "text", str(tmp_path / "c"))
    assert tok.decode(list(tokens)) == "ab<|eos|>c<|eos|>de" and meta["documents"] == 3


def test_split_is_nanogpts_contiguous_90_10(tiny_shakespeare, tmp_path):
    from lmforge.plugins.tokenizers.char import CharTokenizer
    from transformers import AutoTokenizer

    text_path = tiny_shakespeare
    out = tmp_path / "tok"
    lmforge.run_stage(CharTokenizer(), {"text": text_path}, out, lmforge.RunContext(quiet=True))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert len(tok) - 8 == 65  # nanoGPT's 65-character vocabulary
    tokens, _ = pretrain_corpus.tokenized_corpus(text_path, out, tok, "text", str(tmp_path / "cache"))
    train, val = pretrain_windows.split_tokens(tokens, 0.1)
    assert (len(train), len(val)) == (1_003_854, 111_540)  # nanoGPT's prepare.py numbers
    text = text_path.read_text()
    assert tok.decode(list(val[:200])) == text[1_003_854:1_003_854 + 200]


def test_windows_stride_and_resumable_order():
    import numpy as np

    tokens = np.arange(100, dtype=np.uint16)
    packed = pretrain_windows.Windows(tokens, block_size=9, stride=9)
    sliding = pretrain_windows.Windows(tokens, block_size=9, stride=1)
    assert len(packed) == 11 and len(sliding) == 91  # (100 - 10) // stride + 1
    assert packed.batch([1]).tolist() == [list(range(9, 19))]
    assert sliding.batch([5, 90]).tolist() == [list(range(5, 15)), list(range(90, 100))]
    order = pretrain_windows.SampleOrder(len(sliding), seed=3)
    first_epoch = order.windows(0, 91)
    assert sorted(first_epoch) == list(range(91))  # every window once per epoch
    fresh = pretrain_windows.SampleOrder(len(sliding), seed=3)
    assert fresh.windows(150, 40) == order.windows(150, 40)  # a pure function of position: resume-safe
    assert pretrain_windows.SampleOrder(91, seed=4).windows(0, 91) != first_epoch
    # one process with batch 2b reads what two ranks with batch b read at the same step
    one = pretrain_windows.sample_position(3, 0, 0, grad_accum=1, world=1, batch_size=8)
    ranks = [pretrain_windows.sample_position(3, 0, r, grad_accum=1, world=2, batch_size=4) for r in (0, 1)]
    assert ranks == [one, one + 4]


def test_schedules_warmup_cosine_to_min_lr_and_wsd():
    cfg = pretrain_config.PretrainConfig(max_steps=2000, learning_rate=1e-3, min_lr=1e-4, warmup_steps=100)
    assert pretrain_schedule.lr_at(0, cfg) == pytest.approx(1e-3 / 101)  # nanoGPT: lr * (it + 1) / (warmup + 1)
    assert pretrain_schedule.lr_at(100, cfg) == pytest.approx(1e-3)
    assert pretrain_schedule.lr_at(1050, cfg) == pytest.approx(5.5e-4)
    assert pretrain_schedule.lr_at(2000, cfg) == pytest.approx(1e-4)
    wsd = pretrain_config.PretrainConfig(max_steps=100, learning_rate=1e-3, min_lr=0.0, warmup_steps=10,
                                lr_scheduler="wsd", decay_steps=20)
    assert [pretrain_schedule.lr_at(s, wsd) for s in (10, 50, 79)] == [1e-3] * 3
    assert pretrain_schedule.lr_at(90, wsd) == pytest.approx(5e-4) and pretrain_schedule.lr_at(100, wsd) == pytest.approx(0.0)
    with pytest.raises(lmforge.ConfigError, match="pretrainer.lr_scheduler: unknown 'cosin'.*did you mean"):
        pretrain_config.PretrainConfig(lr_scheduler="cosin").check()


def test_depth_dial_and_unknown_model_field(char_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(char_dir))
    config = pretrain_model.build_model_config({"model_type": "llama", "depth": 12}, tok)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (12, 768, 6)
    assert config.intermediate_size == 2048 and config.vocab_size == len(tok)
    small = pretrain_model.build_model_config({"model_type": "llama", "depth": 2, "aspect_ratio": 32, "head_dim": 32}, tok)
    assert (small.num_hidden_layers, small.hidden_size, small.num_attention_heads) == (2, 64, 2)
    gpt2 = pretrain_model.build_model_config({"model_type": "gpt2", "depth": 4, "aspect_ratio": 32, "head_dim": 64}, tok)
    assert (gpt2.n_layer, gpt2.n_embd, gpt2.n_head) == (4, 128, 2)
    with pytest.raises(lmforge.ConfigError, match="model.hiden_size: not a field of llama.*hidden_size"):
        pretrain_model.build_model_config({"model_type": "llama", "hiden_size": 3}, tok)


def test_one_command_composes_the_shakespeare_reference():
    cfg = lmforge.compose(["pipeline=shakespeare_char", "tokenizer=char", "pretrainer=shakespeare_char",
                           "model=nanogpt_char"])
    stage = lmforge.stage("pretrainer", cfg)
    c = stage.config
    assert type(stage).__name__ == "LeanPretrainer"
    assert (c.max_steps, c.batch_size, c.block_size, c.learning_rate, c.min_lr, c.warmup_steps, c.adam_beta2,
            c.grad_clip, c.val_fraction, c.stride) == (2000, 12, 64, 1e-3, 1e-4, 100, 0.99, 1.0, 0.1, 1)
    assert (cfg.model.num_hidden_layers, cfg.model.num_attention_heads, cfg.model.hidden_size) == (4, 4, 128)


# ---------------------------------------------------------------- training

def test_lean_loop_learns_and_reports_bits_per_byte(corpus, char_dir, cache, tmp_path):
    out = tmp_path / "model"
    lmforge.run_stage(lean(max_steps=40, eval_steps=40, cache_dir=cache, stride=1),
                      {"text": corpus, "tokenizer": char_dir}, out, context(tmp_path, "learn"))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["val_loss"] < math.log(73) - 1.0  # well below uniform guessing
    assert summary["bits_per_byte"] == pytest.approx(summary["val_loss"] / math.log(2))  # ASCII: 1 byte/token
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in logged if "loss" in m and m["step"] is not None]
    assert steps[-1]["loss"] < steps[0]["loss"] - 1.0
    assert {"lr", "grad_norm", "tokens_per_s", "ms_per_step"} <= set(steps[-1])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(out))
    vocab = len(AutoTokenizer.from_pretrained(str(char_dir)))
    assert model.config.num_hidden_layers == 1 and model.config.vocab_size == vocab
    assert len(AutoTokenizer.from_pretrained(str(out))) == vocab


def test_grad_accumulation_matches_a_bigger_batch(corpus, char_dir, cache, tmp_path):
    whole, accumulated = tmp_path / "whole", tmp_path / "accum"
    inputs = {"text": corpus, "tokenizer": char_dir}
    lmforge.run_stage(lean(max_steps=5, batch_size=4, cache_dir=cache), inputs, whole, context(tmp_path, "a"))
    lmforge.run_stage(lean(max_steps=5, batch_size=2, grad_accum=2, cache_dir=cache), inputs, accumulated,
                      context(tmp_path, "b"))
    assert_same_weights(whole, accumulated, atol=1e-5)


def test_non_finite_loss_stops_with_a_clear_message(corpus, char_dir, cache, tmp_path):
    stage = lean(max_steps=30, learning_rate=1e12, grad_clip=0.0, warmup_steps=0, logging_steps=5,
                 cache_dir=cache, save_steps=5)
    with pytest.raises(lmforge.LmforgeError, match=r"loss is (nan|inf) at step \d+; stopped. Last good checkpoint"):
        lmforge.run_stage(stage, {"text": corpus, "tokenizer": char_dir}, tmp_path / "out", context(tmp_path, "nan"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


RESUME_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import lmforge
    corpus, tok, out, work, cache, marker, model, params, plugin = sys.argv[1:10]
    class PauseMidRun:  # holds the run after step 25 so the test can SIGKILL it there
        @lmforge.hookimpl
        def lmforge_log_metrics(self, stage_name, step, metrics, context):
            if step == 25 and "loss" in metrics:
                Path(marker).write_text("paused")
                time.sleep(600)
    lmforge.register_plugin(PauseMidRun())
    ctx = lmforge.RunContext(stage_name="pretrainer", hardware=lmforge.Hardware(device="cpu", precision="fp32"),
                             quiet=True, model=eval(model), work_dir=Path(work))
    stage = lmforge.registry().get("pretrainer", plugin)(**eval(params))
    lmforge.run_stage(stage, {"text": corpus, "tokenizer": tok}, Path(out), ctx)
""")


@pytest.mark.parametrize("plugin", ["lean", pytest.param("hf_trainer", marks=pytest.mark.slow)])
def test_resume_after_sigkill_ends_where_an_uninterrupted_run_ends(plugin, corpus, char_dir, cache, tmp_path):
    params = {**LOOP, "max_steps": 40, "save_steps": 10, "logging_steps": 5, "cache_dir": cache, "stride": 3}
    inputs = {"text": corpus, "tokenizer": char_dir}
    marker = tmp_path / "paused"
    killed_ctx = context(tmp_path, "killed")
    child = subprocess.Popen([sys.executable, "-c", RESUME_CHILD, str(corpus), str(char_dir), str(tmp_path / "killed"),
                              str(killed_ctx.work_dir), cache, str(marker), repr(MICRO), repr(params), plugin],
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 240
        while not marker.exists():
            assert child.poll() is None, "training process ended before the kill"
            assert time.time() < deadline, "training never reached step 25"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    checkpoints = sorted(p.name for p in killed_ctx.work_dir.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-10", "checkpoint-20"]
    assert not (tmp_path / "killed").exists()

    stage_class = lmforge.registry().get("pretrainer", plugin)
    lmforge.run_stage(stage_class(**params), inputs, tmp_path / "killed", killed_ctx)  # resumes from 20
    lmforge.run_stage(stage_class(**params), inputs, tmp_path / "straight", context(tmp_path, "straight"))
    resumed = json.loads((tmp_path / "killed" / "train_summary.json").read_text())
    straight = json.loads((tmp_path / "straight" / "train_summary.json").read_text())
    assert resumed["resumed_from_step"] == 20 and straight["resumed_from_step"] == 0
    if plugin == "lean":
        assert resumed["final_train_loss"] == pytest.approx(straight["final_train_loss"], abs=1e-6)
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], abs=1e-6)
    assert_same_weights(tmp_path / "killed", tmp_path / "straight", atol=1e-6)


def test_two_process_ddp_matches_one_process_with_the_global_batch(corpus, tmp_path):
    common = ["pipeline=shakespeare_char", "tokenizer=char", "pretrainer=lean", f"data.shakespeare={corpus}",
              f"run.root={tmp_path}", "run.quiet=true", "hardware=cpu", f"pretrainer.cache_dir={tmp_path / 'cache'}",
              "pretrainer.max_steps=6", "pretrainer.block_size=32", "pretrainer.save_steps=3",
              "pretrainer.logging_steps=1", "pretrainer.eval_steps=6", "pretrainer.val_fraction=0.1",
              *[f"model.{k}={v}" for k, v in MICRO.items()]]
    # --multi_gpu selects accelerate's torchrun launcher; with hardware=cpu the ranks join over gloo (MULTI_CPU)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "lmforge.plugins.pretrainers.launch", *common, "run.name=ddp", "pretrainer.batch_size=2"]
    done = subprocess.run(launch, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lmforge.run(lmforge.compose([*common, "run.name=single", "pretrainer.batch_size=4"]))
    ddp = json.loads((tmp_path / "ddp" / "pretrainer" / "train_summary.json").read_text())
    single = json.loads((tmp_path / "single" / "pretrainer" / "train_summary.json").read_text())
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], abs=1e-5)
    assert_same_weights(tmp_path / "ddp" / "pretrainer", tmp_path / "single" / "pretrainer", atol=1e-5)
    assert lmforge.is_complete(tmp_path / "ddp" / "pretrainer")


def test_hf_trainer_plugin_learns_on_the_same_windows(corpus, char_dir, cache, tmp_path, monkeypatch):
    from lmforge.plugins.pretrainers.hf_trainer import HFTrainerPretrainer
    from transformers import Trainer

    evaluated_at, evaluate = [], Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate",
                        lambda trainer, *a, **k: evaluated_at.append(trainer.state.global_step) or evaluate(trainer, *a, **k))
    out = tmp_path / "hf"
    stage = HFTrainerPretrainer(**{**LOOP, "max_steps": 30, "eval_steps": 30, "save_steps": 0, "logging_steps": 10,
                                   "lr_scheduler": "wsd", "cache_dir": cache})
    lmforge.run_stage(stage, {"text": corpus, "tokenizer": char_dir}, out, context(tmp_path, "hf"))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["val_loss"] < math.log(73) - 1.0 and summary["steps"] == 30
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # evaluated once at step 30 (eval_steps divides max_steps), not a second time after training
    assert evaluated_at == [30] and summary["val_loss"] == next(m["eval_loss"] for m in logged if "eval_loss" in m)
    train_logs = [m for m in logged if "loss" in m]
    assert train_logs[-1]["loss"] < train_logs[0]["loss"] and "tokens_per_s" in train_logs[-1]
    # the Trainer's warmup-stable-decay is lmforge's wsd: the last step's lr is the lean loop's for step 29
    assert train_logs[-1]["learning_rate"] == pytest.approx(pretrain_schedule.lr_at(29, stage.config), rel=1e-6)
    assert pretrain_schedule.lr_at(29, stage.config) < 3e-3 / 3
