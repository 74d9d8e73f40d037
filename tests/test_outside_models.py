"""Outside models: Hub ids through the HF cache, chat templates for models without one, continued
pretraining, end-of-turn EOS in saved generation configs, and the user's data left as the user's."""

from __future__ import annotations

import json

import pytest
from lmforge.errors import MissingArtifact
from lmforge.hub import resolve_model_ref, split_revision


def test_local_dir_wins_over_hub_id(tmp_path, monkeypatch, fake_hub):
    fake_hub.add_model("org/tiny", {"config.json": "{}"})
    local = tmp_path / "org" / "tiny"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    resolved = resolve_model_ref("org/tiny")
    assert resolved.path == local.relative_to(tmp_path) and resolved.commit is None


def test_hub_id_resolves_to_cached_snapshot_with_commit(fake_hub):
    main = fake_hub.add_model("org/tiny", {"config.json": "{}"})
    v1 = fake_hub.add_model("org/tiny", {"config.json": '{"v": 1}'}, revision="v1")
    resolved = resolve_model_ref("org/tiny")
    assert resolved.commit == main and resolved.path.name == main and (resolved.path / "config.json").is_file()
    assert resolved.repo_id == "org/tiny"
    assert resolve_model_ref("org/tiny@v1").commit == v1
    assert resolve_model_ref("org/tiny", revision="v1").commit == v1
    assert resolve_model_ref(f"org/tiny@{main}").commit == main
    assert split_revision("org/tiny@v1") == ("org/tiny", "v1") and split_revision("a/b") == ("a/b", None)


def test_missing_model_is_one_line_naming_ref_and_what_was_tried(fake_hub, tmp_path):
    with pytest.raises(MissingArtifact) as err:
        resolve_model_ref("org/absent")
    message = str(err.value)
    assert "org/absent" in message and "not a directory and not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message
    with pytest.raises(MissingArtifact, match="not a directory"):
        resolve_model_ref(str(tmp_path / "no" / "such" / "dir"))
    fake_hub.add_model("org/tiny", {"config.json": "{}"})
    with pytest.raises(MissingArtifact, match="revision 'v9'"):
        resolve_model_ref("org/tiny@v9")


# ---------------------------------------------------------------- outside models: chat templates

MICRO_GPT2 = {"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 256}


def build_gpt2_style(out, text: str, vocab_size: int = 320, seed: int = 0):
    """A GPT-2-style model dir as the Hub has them: byte-level BPE with <|endoftext|> only, no chat template,
    no pad token, a GPT2LMHeadModel. Built here (offline) instead of downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, set_seed

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(text.splitlines(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    set_seed(seed)
    eos = tokenizer.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, **MICRO_GPT2))
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def gpt2_style_dir(tmp_path_factory):
    from pathlib import Path

    import lmforge

    text = Path(lmforge.sample_data_path("tinyshakespeare.txt")).read_text()[:20_000]
    return build_gpt2_style(tmp_path_factory.mktemp("outside") / "gpt2-style", text)


def test_gpt2_style_model_has_no_template_and_sft_says_how_to_add_one(gpt2_style_dir, fake_hub, tiny_context,
                                                                      tmp_path):
    from lmforge.errors import ConfigError
    from lmforge.plugins.finetuners.sft import SFTConfig, build_trainer
    from lmforge.plugins.lib.models import load_tokenizer

    assert load_tokenizer(gpt2_style_dir).chat_template is None
    fake_hub.add_model("org/tiny-gpt2", gpt2_style_dir)
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    with pytest.raises(ConfigError, match="finetuner.chat_template"):
        build_trainer(SFTConfig(save_steps=0), {"model": "org/tiny-gpt2", "data": data}, tiny_context)


@pytest.mark.parametrize("preset, end", [("chatml", "<|im_end|>"), ("lmforge", "<|end|>")])
def test_preset_template_adds_tokens_pad_markers_and_resizes(gpt2_style_dir, fake_hub, preset, end):
    from lmforge.plugins.lib.models import (
        end_of_turn_token,
        generation_eos_ids,
        load_causal_lm,
        load_tokenizer,
        prepare_model_for_tokenizer,
    )

    fake_hub.add_model("org/tiny-gpt2", gpt2_style_dir)
    before = len(load_tokenizer("org/tiny-gpt2"))
    tokenizer = load_tokenizer("org/tiny-gpt2", chat_template=preset)
    assert "{% generation %}" in tokenizer.chat_template.replace("{%- generation %}", "{% generation %}")
    assert tokenizer.pad_token is not None and end in tokenizer.all_special_tokens and len(tokenizer) > before
    assert end_of_turn_token(tokenizer) == end
    assert generation_eos_ids(tokenizer) == [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(end)]
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]
    rendered = tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    reply = [t for t, m in zip(rendered["input_ids"], rendered["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(reply) == f"hello there{end}"  # assistant-only loss covers the reply + end of turn
    model = prepare_model_for_tokenizer(load_causal_lm("org/tiny-gpt2"), tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_template_from_a_jinja_file_or_another_tokenizer(gpt2_style_dir, tiny_model_dir, fake_hub, tmp_path):
    from lmforge.errors import ConfigError
    from lmforge.plugins.lib.models import CHATML_TEMPLATE, end_of_turn_token, load_tokenizer

    jinja = tmp_path / "chatml.jinja"
    jinja.write_text(CHATML_TEMPLATE)
    from_file = load_tokenizer(gpt2_style_dir, chat_template=str(jinja))
    assert end_of_turn_token(from_file) == "<|im_end|>" and "<|im_start|>" in from_file.all_special_tokens
    fake_hub.add_model("org/lmforge-chat", tiny_model_dir)
    copied = load_tokenizer(gpt2_style_dir, chat_template="org/lmforge-chat")  # copy lmforge's own from a Hub id
    assert end_of_turn_token(copied) == "<|end|>" and "<|user|>" in copied.all_special_tokens
    with pytest.raises(ConfigError, match=r"chat_template: 'chatmll' is not a preset \(chatml, lmforge\)"):
        load_tokenizer(gpt2_style_dir, chat_template="chatmll")


# ---------------------------------------------------------------- turns end

def test_saved_generation_config_lists_end_of_turn_beside_eos(tiny_model_dir, tmp_path):
    from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer, save_model_dir
    from transformers import GenerationConfig

    tokenizer = load_tokenizer(tiny_model_dir)
    save_model_dir(load_causal_lm(tiny_model_dir), tokenizer, tmp_path / "saved")
    config = GenerationConfig.from_pretrained(str(tmp_path / "saved"))
    assert config.eos_token_id == [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")]
    assert config.pad_token_id == tokenizer.pad_token_id


def test_keep_start_cuts_earlier_turns_never_the_end_of_turn(tiny_model_dir, tiny_context, tmp_path):
    from lmforge.plugins.finetuners.sft import SFTConfig, build_trainer

    long = " ".join(["word"] * 60)
    records = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": long},
                      {"role": "assistant", "content": long}, {"role": "user", "content": "and?"},
                      {"role": "assistant", "content": "done"}]},  # fits once the first exchange goes
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": long * 2}]},  # cannot fit
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    context = lmforge_context(tiny_context, tmp_path)
    trainer, tokenizer, stats = build_trainer(SFTConfig(max_length=48, save_steps=0), {"model": tiny_model_dir,
                                                                                        "data": data}, context)
    assert stats["cut_prompt_side"] == 1 and stats["dropped_too_long"] == 1 and len(trainer.train_dataset) == 2
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    for row in trainer.train_dataset:
        trained = [t for t in row["labels"] if t != -100] if "labels" in row else None
        ids = row["input_ids"]
        assert len(ids) <= 48 and end in ids
        if trained is not None:
            assert trained[-1] == end
    texts = [tokenizer.decode(r["input_ids"]) for r in trainer.train_dataset]
    assert any("Be brief." in t and "and?" in t and "done<|end|>" in t and "word word" not in t for t in texts)


def lmforge_context(base, tmp_path):
    import dataclasses

    return dataclasses.replace(base, work_dir=tmp_path / "work")


# ---------------------------------------------------------------- the user's data stays the user's

def test_no_identity_unless_the_config_asks():
    import lmforge

    own = lmforge.compose(["pipeline=sft_only", "pipeline.stages.finetuner.model=org/x"])
    assert own.finetuner.get("system_prompt") is None and not own.finetuner.get("placeholders")
    assert own.sampler.get("system_prompt") is None
    demo = lmforge.compose([])  # the bundled demo asks for its identity explicitly
    assert "{{name}}" in demo.finetuner.system_prompt and demo.finetuner.placeholders.name == "Forge"
    from lmforge.plugins.finetuners.sft import SFTConfig, load_examples

    examples, _ = load_examples(lmforge.sample_data_path("sft.jsonl"), SFTConfig())
    assert all(m["role"] != "system" for e in examples for m in e["messages"])


# ---------------------------------------------------------------- continued pretraining

CPT_MODEL = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64,
             "tie_word_embeddings": True}
CPT_LOOP = {"batch_size": 4, "block_size": 32, "val_fraction": 0.1, "learning_rate": 3e-3, "warmup_steps": 0,
            "eval_steps": 0, "save_steps": 0, "logging_steps": 1}


@pytest.fixture(scope="module")
def shakespeare_base(tmp_path_factory):
    """A char-level model pretrained 40 steps on the head of Tiny Shakespeare, and that text."""
    from pathlib import Path

    import lmforge
    from lmforge.plugins.pretrainers.lean_loop import LeanPretrainer
    from lmforge.plugins.tokenizers.char import CharTokenizer

    root = tmp_path_factory.mktemp("cpt")
    corpus = root / "head.txt"
    corpus.write_text(Path(lmforge.sample_data_path("tinyshakespeare.txt")).read_text()[:30_000])
    lmforge.run_stage(CharTokenizer(), {"text": corpus}, root / "tok", lmforge.RunContext(quiet=True))
    lmforge.run_stage(LeanPretrainer(**CPT_LOOP, max_steps=40, stride=1, cache_dir=str(root / "cache")),
                      {"text": corpus, "tokenizer": root / "tok"}, root / "base", cpt_context(root, "base"))
    return root / "base", corpus


def cpt_context(root, name):
    import lmforge

    return lmforge.RunContext(stage_name="pretrainer", hardware=lmforge.Hardware(device="cpu", precision="fp32"),
                              quiet=True, model=dict(CPT_MODEL), work_dir=root / f"work-{name}")


def first_loss(model_dir) -> float:
    logged = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return next(m["loss"] for m in logged if "loss" in m)


@pytest.mark.parametrize("plugin", ["lean", "hf_trainer"])
def test_continued_pretraining_starts_lower_than_random_init(plugin, shakespeare_base, fake_hub, tmp_path):
    import lmforge
    from lmforge.errors import ConfigError
    from lmforge.hub import resolve_model_ref
    from lmforge.plugins.pretrainers.hf_trainer import HFTrainerPretrainer
    from lmforge.plugins.pretrainers.lean_loop import LeanPretrainer

    base, corpus = shakespeare_base
    fake_hub.add_model("org/shakes-base", base)
    cls = LeanPretrainer if plugin == "lean" else HFTrainerPretrainer
    cache = str(tmp_path / "cache")
    hub_model = resolve_model_ref("org/shakes-base")
    lmforge.run_stage(cls(**CPT_LOOP, max_steps=2, cache_dir=cache), {"text": corpus, "tokenizer": hub_model},
                      tmp_path / "random", cpt_context(tmp_path, "random"))
    lmforge.run_stage(cls(**CPT_LOOP, max_steps=2, cache_dir=cache, init_from="org/shakes-base"),
                      {"text": corpus, "tokenizer": hub_model}, tmp_path / "continued", cpt_context(tmp_path, "cont"))
    random_start, continued_start = first_loss(tmp_path / "random"), first_loss(tmp_path / "continued")
    print(f"{plugin}: first-step loss random init {random_start:.3f}, continued from org/shakes-base "
          f"{continued_start:.3f}")
    assert continued_start < random_start - 0.5
    with pytest.raises(ConfigError, match="pretrainer.init_from: continued pretraining uses the model's own"):
        lmforge.run_stage(cls(**CPT_LOOP, max_steps=1, cache_dir=cache, init_from="org/shakes-base"),
                          {"text": corpus, "tokenizer": shakespeare_base[0].parent / "tok"}, tmp_path / "x",
                          cpt_context(tmp_path, "x"))


# ---------------------------------------------------------------- the whole chain through `lmforge run`

CHATS = [("hi", "Hello."), ("Who are you?", "A small model."), ("Name a colour.", "Blue."),
         ("Say yes.", "Yes."), ("Count to three.", "One, two, three."), ("What is 2+2?", "Four."),
         ("Say no.", "No."), ("Bye!", "Goodbye.")]


def cli(*args, cwd, timeout=600):
    import os
    import subprocess
    import sys

    env = {**os.environ, "LMFORGE_TRACEBACK": "1"}
    proc = subprocess.run([sys.executable, "-m", "lmforge.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def greedy_reply(model_dir, prompt: str, max_new_tokens: int = 24):
    """Vanilla transformers, no lmforge: apply the chat template, greedy ``generate`` with the saved config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens)[0, ids["input_ids"].shape[1]:]
    return tokenizer, out.tolist()


@pytest.mark.slow
def test_outside_model_sft_with_chatml_then_dpo_then_sample_through_lmforge_run(gpt2_style_dir, fake_hub,
                                                                                 tmp_path):
    base_commit = fake_hub.add_model("org/tiny-gpt2", gpt2_style_dir)
    chats = "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                    + "\n" for q, a in CHATS)
    commit = fake_hub.add_dataset("org/chats", {"train.jsonl": chats})
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}],
                                         "chosen": [{"role": "assistant", "content": a}],
                                         "rejected": [{"role": "assistant", "content": a.upper() + " " + a}]}) + "\n"
                             for q, a in CHATS))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q, _ in CHATS[:4]))
    common = [f"run.root={tmp_path / 'runs'}", "hardware=cpu", "run.report=false", "run.quiet=true"]
    cli("run", *common, "run.name=sft", "pipeline=sft_only", "pipeline.stages.finetuner.model=org/tiny-gpt2",
        "data.sft=org/chats", "finetuner.chat_template=chatml", "finetuner.max_steps=120", "finetuner.batch_size=8",
        "finetuner.learning_rate=1e-2", "finetuner.save_steps=0", "finetuner.max_length=64",
        "finetuner.eval_fraction=0", "finetuner.warmup_steps=0", cwd=tmp_path)  # learn every chat by heart
    sft = tmp_path / "runs" / "sft" / "finetuner"
    manifest = json.loads((sft / "manifest.json").read_text())
    assert commit in json.dumps(manifest) and base_commit in json.dumps(manifest)  # Hub commits are recorded
    chat_commit = fake_hub.add_model("org/tiny-chat", sft)  # the fine-tuned model, published: aligned by its id

    # vanilla generate stops at the end of the turn: <|im_end|> is an EOS of the saved generation config
    tokenizer, reply = greedy_reply(sft, CHATS[2][0])
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert reply[-1] == end and len(reply) < 24, tokenizer.decode(reply)
    assert tokenizer.decode(reply[:-1]).strip() == CHATS[2][1]

    # GRPO / RLOO rollouts of a model SFT'd to end its turns terminate (TRL reads the generation config's EOS)
    for aligner in ("grpo", "rloo"):
        cli("run", *common, f"run.name={aligner}", "pipeline=align_only", f"aligner={aligner}",
            "pipeline.stages.aligner.model=org/tiny-chat", f"data.preferences={prompts}", "aligner.max_steps=2",
            "aligner.batch_size=4", "aligner.num_generations=4", "aligner.max_completion_length=32",
            "aligner.save_steps=0", "aligner.logging_steps=1", cwd=tmp_path)
        logged = [json.loads(line) for line in
                  (tmp_path / "runs" / aligner / "aligner" / "metrics.jsonl").read_text().splitlines()]
        clipped = [m["completions/clipped_ratio"] for m in logged if "completions/clipped_ratio" in m]
        print(f"{aligner}: completions/clipped_ratio per step {clipped}")
        assert clipped and max(clipped) <= 0.5, clipped

    cli("run", *common, "run.name=dpo", "pipeline=align_only", "pipeline.stages.aligner.model=org/tiny-chat",
        f"data.preferences={prefs}", "aligner.max_steps=4", "aligner.save_steps=0", "aligner.max_length=64",
        cwd=tmp_path)
    dpo = tmp_path / "runs" / "dpo" / "aligner"
    assert chat_commit in (dpo / "manifest.json").read_text()
    assert json.loads((dpo / "generation_config.json").read_text())["eos_token_id"] == [tokenizer.eos_token_id, end]
    cli("run", *common, "run.name=sample", "pipeline=sample_only", f"pipeline.stages.sampler.model={dpo}",
        f"data.prompts={prompts}", "sampler.do_sample=false", "sampler.max_new_tokens=24", cwd=tmp_path)
    rows = [json.loads(line) for line in
            (tmp_path / "runs" / "sample" / "sampler" / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("<|im_start|>" not in r["completion"] for r in rows)
    assert sum(r["completion"].strip() == a for r, (_, a) in zip(rows, CHATS, strict=False)) >= 2, rows


@pytest.mark.parametrize("aligner", ["dpo", "orpo", "kto"])
def test_base_model_without_template_is_aligned_on_plain_strings(aligner, gpt2_style_dir, fake_hub, tiny_context,
                                                                  tmp_path):
    import dataclasses

    import lmforge
    from lmforge.errors import DataError
    from lmforge.plugins.aligners.dpo import DPOAligner
    from lmforge.plugins.aligners.kto import KTOAligner
    from lmforge.plugins.aligners.orpo import ORPOAligner
    from safetensors.torch import load_file

    stage_class = {"dpo": DPOAligner, "orpo": ORPOAligner, "kto": KTOAligner}[aligner]

    fake_hub.add_model("org/base-gpt2", gpt2_style_dir)
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"prompt": f"Q: {q}\nA:", "chosen": f" {a}", "rejected": " I refuse."}) + "\n"
                             for q, a in CHATS))
    context = dataclasses.replace(tiny_context, work_dir=tmp_path / "work")
    model = resolve_model_ref("org/base-gpt2")
    out, manifest = lmforge.run_stage(stage_class(max_steps=3, batch_size=4, learning_rate=1e-3, save_steps=0,
                                                 logging_steps=1, max_length=160),
                                      {"model": model, "data": plain}, tmp_path / "dpo", context)
    assert manifest["metrics"].get("train_loss") is not None
    before, after = load_file(str(model.path / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not (before[k] == after[k]).all() for k in before)
    chats = tmp_path / "chats.jsonl"  # conversational pairs need a template: one line saying what to do
    chats.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}],
                                 "chosen": [{"role": "assistant", "content": "hello"}],
                                 "rejected": [{"role": "assistant", "content": "no"}]}) + "\n")
    with pytest.raises(DataError, match="plain-text preferences.*or set chat_template"):
        lmforge.run_stage(stage_class(max_steps=1, save_steps=0), {"model": model, "data": chats}, tmp_path / "x",
                          context)


@pytest.mark.parametrize("aligner", ["grpo", "rloo"])
def test_online_aligner_gives_a_base_model_a_template_and_a_reference_that_reads_it(aligner, gpt2_style_dir,
                                                                                   tiny_context, tmp_path):
    """A template adds tokens (chatml's <|im_start|>/<|im_end|>): the policy's embeddings are resized, and so
    must be the reference's (TRL would reload the model dir without them and fail at the first new id)."""
    import dataclasses

    import lmforge
    from lmforge.plugins.aligners.grpo import GRPOAligner, build_online_rl
    from lmforge.plugins.aligners.rloo import RLOOAligner
    from lmforge.plugins.lib.models import load_tokenizer

    stage_class = {"grpo": GRPOAligner, "rloo": RLOOAligner}[aligner]
    prompts = tmp_path / "questions.jsonl"
    prompts.write_text("".join(json.dumps({"question": q}) + "\n" for q, _ in CHATS))
    stage = stage_class(max_steps=2, batch_size=4, num_generations=2, rewards=["length"], max_prompt_length=32,
                        max_completion_length=8, save_steps=0, logging_steps=1, chat_template="chatml", beta=0.04,
                        system_prompt="Answer briefly.")
    inputs = {"model": gpt2_style_dir, "data": prompts}
    context = dataclasses.replace(tiny_context, work_dir=tmp_path / "work")
    vocab = len(load_tokenizer(gpt2_style_dir, chat_template="chatml"))
    trainer = build_online_rl(stage.config, inputs, context, aligner.upper())
    assert trainer.ref_model.get_input_embeddings().weight.shape[0] == vocab
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    assert trainer.train_dataset[0]["prompt"][0] == {"role": "system", "content": "Answer briefly."}
    out, _ = lmforge.run_stage(stage, inputs, tmp_path / aligner, context)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kls = [row["kl"] for row in logged if "kl" in row]
    assert kls and kls[0] < 0.05  # the first samples come from a policy equal to its reference
    assert load_tokenizer(out).chat_template and len(load_tokenizer(out)) == vocab


def test_chat_serve_and_rank_open_a_hub_id(varied_model_dir, fake_hub, tmp_path):
    import lmforge
    from lmforge.plugins.rank.sampling import SamplingSettings, sample_candidates
    from lmforge.plugins.samplers.chat import ChatSession
    from lmforge.plugins.serve.app import ModelServer

    commit = fake_hub.add_model("org/forge-tiny", varied_model_dir)
    session = ChatSession("org/forge-tiny", max_new_tokens=4, do_sample=False, device="cpu")
    assert session.tokenizer.chat_template
    server = ModelServer("org/forge-tiny", device="cpu")
    try:
        assert server.model_name == "org/forge-tiny"
    finally:
        server.close()
    ranked = sample_candidates("org/forge-tiny", lmforge.sample_data_path("prompts.jsonl"), tmp_path / "session",
                               SamplingSettings(k=2, max_new_tokens=4, max_prompts=1), device="cpu")
    meta = json.loads((tmp_path / "session" / "session.json").read_text())
    assert len(ranked.prompts) == 1 and meta["model"].endswith(commit)


def test_an_outside_models_own_extra_stop_ids_are_kept(tiny_model_dir):
    from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer, set_generation_eos

    tokenizer, model = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir)
    extra = tokenizer.convert_tokens_to_ids("<|user|>")  # stands in for e.g. Llama 3's <|eom_id|>
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, extra, 10**6]  # the last: not in the vocab
    set_generation_eos(model, tokenizer)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, end, extra]
