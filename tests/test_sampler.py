"""Sampler: determinism, seeds, stop strings, end-of-turn ids, best-of-N, chat, vLLM fallback, CLI hooks.

The model is a randomly initialised tiny Llama with untied embeddings and a wide init, so its greedy
answers are gibberish but differ from prompt to prompt (a tied, narrow-init model only echoes "\\n"), which
is what makes "the right answer went to the right prompt" checkable.
"""

from __future__ import annotations

import io
import json

import lmforge
import pytest

PROMPTS = [{"messages": [{"role": "user", "content": text}]} for text in (
    "Write a short poem about the sea.", "What is two plus two?", "Name three colours.",
    "Tell me a story about a fox who lived in the forest near the river.", "Why is the sky blue?", "Hi")]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sampler") / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def sample_rows(model_dir, prompts, out, context, **params):
    from lmforge.plugins.samplers.hf_generate import HFGenerateSampler

    inputs = {"model": model_dir, "prompts": prompts}
    if "reward_model" in params:
        inputs["reward_model"] = params.pop("reward_model")
    lmforge.run_stage(HFGenerateSampler(max_new_tokens=16, **params), inputs, out, context)
    return [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]


GREEDY = {"do_sample": False, "system_prompt": "You are Forge."}


def test_greedy_is_deterministic_and_independent_of_batching(varied_model_dir, prompts_file, tmp_path,
                                                              tiny_context):
    batched = sample_rows(varied_model_dir, prompts_file, tmp_path / "a", tiny_context, batch_size=4, **GREEDY)
    again = sample_rows(varied_model_dir, prompts_file, tmp_path / "b", tiny_context, batch_size=4, **GREEDY)
    single = sample_rows(varied_model_dir, prompts_file, tmp_path / "c", tiny_context, batch_size=1, **GREEDY)
    texts = [r["completion"] for r in batched]
    assert texts == [r["completion"] for r in again] == [r["completion"] for r in single]
    assert [r["index"] for r in batched] == list(range(len(PROMPTS)))
    assert len(set(texts)) == len(PROMPTS) and all(t.strip() for t in texts)  # distinct, non-empty answers
    assert batched[0]["prompt"][0] == {"role": "system", "content": "You are Forge."}
    # the plain transformers call on the same rendered prompt gives the same text
    messages = [{"role": "system", "content": "You are Forge."}, *PROMPTS[1]["messages"]]
    tokenizer, ids = plain_greedy_ids(varied_model_dir, messages)
    plain = tokenizer.decode(ids, skip_special_tokens=True)
    assert texts[1] == plain


def test_same_seed_same_samples_other_seed_differs(varied_model_dir, prompts_file, tmp_path, tiny_context):
    params = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "n": 3, "batch_size": 3}
    first = sample_rows(varied_model_dir, prompts_file, tmp_path / "a", tiny_context, seed=7, **params)
    second = sample_rows(varied_model_dir, prompts_file, tmp_path / "b", tiny_context, seed=7, **params)
    other = sample_rows(varied_model_dir, prompts_file, tmp_path / "c", tiny_context, seed=8, **params)
    assert len(first) == 3 * len(PROMPTS)
    assert [r["sample"] for r in first[:3]] == [0, 1, 2]
    assert [r["completion"] for r in first] == [r["completion"] for r in second]
    assert [r["completion"] for r in first] != [r["completion"] for r in other]
    assert len({r["completion"] for r in first if r["index"] == 0}) > 1  # n samples of a prompt differ


def test_stop_strings_cut_exactly(varied_model_dir, prompts_file, tmp_path, tiny_context):
    free = sample_rows(varied_model_dir, prompts_file, tmp_path / "free", tiny_context, **GREEDY)
    full = free[0]["completion"]
    stop = full[6:9]
    stopped = sample_rows(varied_model_dir, prompts_file, tmp_path / "stop", tiny_context,
                          stop_strings=[stop, "never-appears"], **GREEDY)
    row = stopped[0]
    assert row["completion"] == full[:full.find(stop)]  # exactly the text before the stop string
    assert row["finish_reason"] == "stop" and free[0]["finish_reason"] == "length"
    assert row["completion_tokens"] < free[0]["completion_tokens"]  # generation really stopped early
    for before, after in zip(free, stopped):  # every other prompt: cut at its own first occurrence
        assert after["completion"] == before["completion"].split(stop)[0]


def plain_greedy_ids(model_dir, messages, max_new_tokens=16):
    """Token ids from a plain transformers generate call: the reference the sampler must reproduce."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    with torch.no_grad():
        output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")],
                                pad_token_id=tokenizer.pad_token_id)
    return tokenizer, output[0, encoded["input_ids"].shape[1]:].tolist()


def test_extra_end_of_turn_token_stops_generation(varied_model_dir, prompts_file, tmp_path, tiny_context):
    messages = [{"role": "system", "content": "You are Forge."}, *PROMPTS[0]["messages"]]
    tokenizer, ids = plain_greedy_ids(varied_model_dir, messages)
    position = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])
    token = tokenizer.convert_ids_to_tokens(ids[position])
    ended = sample_rows(varied_model_dir, prompts_file, tmp_path / "eot", tiny_context,
                        stop_tokens=["<|end|>", token], **GREEDY)
    assert ended[0]["completion"] == tokenizer.decode(ids[:position], skip_special_tokens=True)
    assert ended[0]["completion_tokens"] == position and ended[0]["finish_reason"] == "stop"


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, tiny_tokenizer_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig, set_seed

    set_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         num_labels=1, initializer_range=0.2, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    out = tmp_path_factory.mktemp("sampler") / "reward_model"
    AutoModelForSequenceClassification.from_config(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def test_best_of_n_keeps_the_highest_reward(varied_model_dir, prompts_file, reward_model_dir, tmp_path,
                                            tiny_context):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    params = {"do_sample": True, "temperature": 1.0, "seed": 3, "batch_size": 6, "reward_model": reward_model_dir}
    everything = sample_rows(varied_model_dir, prompts_file, tmp_path / "all", tiny_context, n=4, **params)
    best = sample_rows(varied_model_dir, prompts_file, tmp_path / "best", tiny_context, n=1, best_of=4, **params)
    assert len(everything) == 4 * len(PROMPTS) and len(best) == len(PROMPTS)
    assert [r["rank"] for r in everything[:4]] == [0, 1, 2, 3]
    # the reward recorded is the reward model's score of the whole templated conversation
    tokenizer = AutoTokenizer.from_pretrained(str(reward_model_dir))
    scorer = AutoModelForSequenceClassification.from_pretrained(str(reward_model_dir)).eval()
    row = everything[5]
    text = tokenizer.apply_chat_template([*row["prompt"], {"role": "assistant", "content": row["completion"]}],
                                         tokenize=False)
    with torch.no_grad():
        expected = scorer(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    assert row["reward"] == pytest.approx(expected, abs=1e-4)
    # best_of draws the same 4 samples (same seed) and keeps the one with the highest reward
    for kept in best:
        candidates = [r for r in everything if r["index"] == kept["index"]]
        top = max(candidates, key=lambda r: r["reward"])
        assert kept["completion"] == top["completion"] and kept["reward"] == pytest.approx(top["reward"])
    assert any(k["reward"] > min(r["reward"] for r in everything if r["index"] == k["index"]) for k in best)


def test_bad_settings_name_the_key(varied_model_dir, prompts_file, tmp_path, tiny_context):
    from lmforge.plugins.samplers.hf_generate import HFGenerateSampler

    with pytest.raises(lmforge.ConfigError, match=r"^sampler\.temperature: .*do_sample"):
        HFGenerateSampler(temperature=0.0)
    with pytest.raises(lmforge.ConfigError, match=r"^sampler\.best_of: got 2, expected >= n \(3\)"):
        HFGenerateSampler(n=3, best_of=2)
    with pytest.raises(lmforge.ConfigError, match=r"^sampler\.do_sample"):
        HFGenerateSampler(do_sample=False, n=2)
    with pytest.raises(lmforge.ConfigError, match="reward_model"):
        lmforge.run_stage(HFGenerateSampler(best_of=2), {"model": varied_model_dir, "prompts": prompts_file},
                          tmp_path / "x", tiny_context)
    assert not (tmp_path / "x").exists()
    with pytest.raises(lmforge.ConfigError, match="top_pp"):
        lmforge.stage("sampler", lmforge.compose(["+sampler.top_pp=0.5"]))


def test_vllm_plugin_explains_what_is_missing(varied_model_dir, prompts_file, tmp_path, tiny_context):
    import importlib.util

    from lmforge.plugins.samplers.vllm_engine import VLLMSampler, vllm_unavailable_reason

    sampler = lmforge.stage("sampler", lmforge.compose(["sampler=vllm"]))
    assert isinstance(sampler, VLLMSampler) and sampler.config.n == 1
    reason = vllm_unavailable_reason()
    if reason is None:
        pytest.skip("vllm and a GPU are present")
    assert importlib.util.find_spec("vllm") is None or "GPU" in reason
    with pytest.raises(lmforge.ConfigError) as info:
        lmforge.run_stage(sampler, {"model": varied_model_dir, "prompts": prompts_file}, tmp_path / "v",
                          tiny_context)
    message = str(info.value)
    assert "\n" not in message and "sampler=vllm" in message and "hf_generate" in message


# ---------------------------------------------------------------------------------------------- chat


def test_chat_streams_tokens_keeps_turns_and_retries(varied_model_dir, prompts_file, tmp_path, tiny_context):
    from lmforge.plugins.samplers.chat import ChatSession

    session = ChatSession(varied_model_dir, system_prompt="You are Forge.", max_new_tokens=16, do_sample=False)
    pieces = list(session.send(PROMPTS[1]["messages"][0]["content"]))
    reference = sample_rows(varied_model_dir, prompts_file, tmp_path / "ref", tiny_context, **GREEDY)
    assert len(pieces) > 1, "tokens arrive one piece at a time"
    assert "".join(pieces) == reference[1]["completion"]  # same answer as batch sampling
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
    assert list(session.retry()) == pieces and len(session.messages) == 2  # retry replaces the last answer
    list(session.send("And then?"))
    rendered = session.rendered_prompt()
    assert rendered.count("<|user|>") == 2 and "What is two plus two?" in rendered  # multi-turn memory
    session.clear()
    assert session.messages == [] and "two plus two" not in session.rendered_prompt()


def test_chat_context_files_are_working_memory(varied_model_dir, tmp_path):
    from lmforge.plugins.samplers.chat import ChatSession

    notes = tmp_path / "notes.md"
    notes.write_text("The launch code is PELICAN-42.")
    session = ChatSession(varied_model_dir, system_prompt="You are Forge.", context_files=[notes],
                          max_new_tokens=4, do_sample=False)
    rendered = session.rendered_prompt()
    assert rendered.index("You are Forge.") < rendered.index("PELICAN-42") < rendered.index("<|assistant|>")
    assert "notes.md" in rendered
    with pytest.raises(lmforge.MissingArtifact, match="nope.txt"):
        ChatSession(varied_model_dir, context_files=[tmp_path / "nope.txt"])


def test_chat_command_repl(varied_model_dir):
    from lmforge.plugins.samplers.chat import chat_main

    lines = iter(["What is two plus two?", "/retry", "/clear", "/help", "/context", "/quit"])
    out = io.StringIO()
    code = chat_main([str(varied_model_dir), "--greedy", "--max-new-tokens", "8", "--system", "You are Forge."],
                     input_fn=lambda prompt: next(lines), output=out)
    text = out.getvalue()
    assert code == 0
    assert text.count("assistant> ") == 2 and "(cleared)" in text and "/retry" in text
    assert "(usage: /context FILE)" in text
    with pytest.raises(lmforge.MissingArtifact, match=r"--retrieve nowhere/: not found"):  # before any question
        chat_main([str(varied_model_dir), "--retrieve", "nowhere/"], input_fn=lambda prompt: pytest.fail(prompt))


def test_cli_commands_registered_and_listed(capsys):
    from lmforge.cli import main, plugin_commands

    commands = plugin_commands()
    assert {"serve", "chat"} <= set(commands)
    main(["--help"])
    usage = capsys.readouterr().out
    assert "serve" in usage and "chat" in usage
    with pytest.raises(SystemExit):
        main(["chat", "/does/not/exist"])
    assert "not found" in capsys.readouterr().err


def test_a_model_with_few_learned_positions_generates_within_them(tiny_tokenizer_dir, prompts_file, tmp_path,
                                                                  tiny_context):
    """GPT-2 blocks with a 24-position table (nanoGPT's shape, smaller): past it the position lookup fails, so the
    sampler and the evaluators' greedy continuations stop at the table's end and keep a long prompt's end."""
    from lmforge.plugins.evaluators.stage_effects import continuation
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=24, n_embd=32, n_layer=1, n_head=2))
    model_dir = tmp_path / "gpt2"
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    rows = sample_rows(model_dir, prompts_file, tmp_path / "out", tiny_context, batch_size=4, do_sample=False)
    assert len(rows) == len(PROMPTS) and all(1 <= r["completion_tokens"] <= 16 for r in rows)
    texts = ["a long plain text prompt that needs more than twenty four tokens " * 3, "short"]
    got = continuation(model, tokenizer, texts, max_new_tokens=40, batch_size=2)
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in got]
    assert len(got) == 2 and all(1 <= n <= 24 for n in lengths)
