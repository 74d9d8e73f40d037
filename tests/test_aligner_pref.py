"""Preference optimisation (DPO, KTO, ORPO) and RL with reward functions (GRPO, RLOO).

Learning is checked on a preference property a tiny random model can pick up in a few steps: real GSM8K
solutions are preferred to the same solutions in capitals. Held-out pairs never seen in training show
whether the preference generalises. GRPO/RLOO optimise a known reward (the share of digit characters,
``regex_coverage``) on GSM8K questions. Resume is checked by interrupting a run after a checkpoint (a
metrics hook raises, as a crash would) and re-running: the result must equal an uninterrupted run.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import lmforge
import pytest
from lmforge.errors import ConfigError, DataError

# 300 HH-RLHF harmless-base dialogue pairs (whole dialogues, MIT): the tests' reading of that format
HH_PAIRS = Path(__file__).parent / "data" / "hh_rlhf_pairs.jsonl"

GSM8K = "gsm8k_test.jsonl.gz"  # the whole GSM8K test split (MIT), tests/data


def _gsm8k(real_data: Path, count: int, start: int = 0) -> list[dict]:
    with gzip.open(real_data / GSM8K, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()[start:start + count]
    return [json.loads(line) for line in lines]


def _shouting_pairs(real_data: Path, count: int, start: int = 0) -> list[dict]:
    return [{"prompt": r["question"], "chosen": r["answer"][:160], "rejected": r["answer"][:160].upper()}
            for r in _gsm8k(real_data, count, start)]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _context(tiny_context, work_dir: Path) -> lmforge.RunContext:
    return lmforge.RunContext(stage_name="aligner", work_dir=work_dir, hardware=tiny_context.hardware,
                              quiet=True, model=dict(tiny_context.model))


def _metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def _state(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _completion_logps(model_dir: Path, pairs: list[dict], key: str, per_token: bool = False) -> list[float]:
    """Summed (or per-token mean) log-probability of each pair's ``key`` answer after its chat-templated prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    out = []
    with torch.no_grad():
        for pair in pairs:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": pair["prompt"]}],
                                                   add_generation_prompt=True, return_dict=False)
            answer = tokenizer(pair[key], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + answer])
            logps = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
            targets = ids[0, 1:]
            token_logps = logps.gather(-1, targets[:, None])[:, 0]
            answer_logps = token_logps[len(prompt) - 1:]
            out.append(float(answer_logps.mean() if per_token else answer_logps.sum()))
    return out


def _implicit_reward_accuracy(policy_dir: Path, reference_dir: Path, pairs: list[dict]) -> float:
    """Share of pairs whose chosen answer gained more log-probability (vs the reference) than the rejected."""
    gains = {key: [p - r for p, r in zip(_completion_logps(policy_dir, pairs, key),
                                         _completion_logps(reference_dir, pairs, key))]
             for key in ("chosen", "rejected")}
    return sum(c > r for c, r in zip(gains["chosen"], gains["rejected"])) / len(pairs)


# --- reward functions ---------------------------------------------------------------------------------------

def test_reward_functions_registered_and_score_real_gsm8k(real_data):
    records = _gsm8k(real_data, 20)
    get = lmforge.registry().get
    answers = [r["answer"] for r in records]
    questions = [r["question"] for r in records]
    exact = get("reward_function", "gsm8k_answer")
    assert exact(answers, questions, answer=answers) == [1.0] * 20
    shifted = answers[1:] + answers[:1]
    assert sum(exact(shifted, questions, answer=answers)) <= 2  # another problem's answer is (nearly) never right
    assert exact(["so the total is 1,000 dollars."], ["q"], answer=["... #### 1000"]) == [1.0]
    assert get("reward_function", "format")(answers[:3] + ["no answer here"], questions[:4]) == [1, 1, 1, 0]
    assert get("reward_function", "length")(["x" * 200, "x" * 100, ""], ["q"] * 3) == [1.0, 0.5, 0.0]
    assert get("reward_function", "regex_coverage")(["ab12", ""], ["q"] * 2) == [0.5, 0.0]

    from lmforge.plugins.aligners.rewards import combine_rewards

    combined = combine_rewards(["gsm8k_answer", "format:0.5", "length:2"], {"length": {"target_chars": 10}})
    scores = combined(["#### 72", "nothing"], ["q", "q"], answer=["#### 72", "#### 72"])
    assert scores == [1.0 + 0.5 + 2 * 0.7, 0.0 + 0.0 + 2 * 0.7]
    assert combined.last_scores["format"] == [1.0, 0.0]


def test_reward_configuration_errors_are_one_line():
    from lmforge.plugins.aligners.rewards import reward_components

    with pytest.raises(ConfigError, match=r"aligner\.rewards\.lenght: .*did you mean 'length'"):
        reward_components(["lenght"])
    with pytest.raises(ConfigError, match=r"aligner\.reward_params\.length\.target: .*takes: target_chars"):
        reward_components(["length"], {"length": {"target": 3}})
    with pytest.raises(ConfigError, match=r"aligner\.rewards: 'format:x'"):
        reward_components(["format:x"])
    with pytest.raises(DataError, match="needs a 'answer' column"):
        reward_components(["gsm8k_answer"])[0][1](["#### 1"], ["q"], question=["q"])


def test_prompt_records_carry_columns_to_rewards(real_data, tiny_model_dir):
    from lmforge.plugins.aligners.online_rl import fit_prompt, load_prompt_records
    from transformers import AutoTokenizer

    rows = load_prompt_records(real_data / GSM8K)  # no known format: falls back to the question field
    assert len(rows) == 1319 and set(rows[0]) == {"prompt", "answer"}  # the whole GSM8K test split
    assert rows[0]["prompt"] == [{"role": "user", "content": _gsm8k(real_data, 1)[0]["question"]}]
    dialogues = load_prompt_records(HH_PAIRS)  # HH-RLHF pairs: shared prompt
    assert dialogues[0]["prompt"][-1]["role"] == "user"
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    long = [{"role": "user", "content": "old " * 300}, {"role": "assistant", "content": "a"},
            {"role": "user", "content": "word " * 400}]
    fitted = fit_prompt(long, tokenizer, 64)
    assert len(fitted) == 1 and fitted[0]["content"].endswith("word ")
    assert len(tokenizer.apply_chat_template(fitted, add_generation_prompt=True, return_dict=False)) <= 64


def test_online_aligners_read_prompts_and_rewards_one_way(tiny_model_dir):
    """PPO, GRPO and RLOO take the same prompt and reward keys, in the same form, and the same prompts."""
    from dataclasses import fields

    from lmforge.plugins.aligners.grpo import GRPOConfig
    from lmforge.plugins.aligners.online_rl import PromptsAndRewards, online_prompts
    from lmforge.plugins.aligners.ppo import PPOConfig
    from lmforge.plugins.aligners.rloo import RLOOConfig
    from transformers import AutoTokenizer

    shared = {f.name for f in fields(PromptsAndRewards)}
    assert {"rewards", "reward_params", "system_prompt", "prompt_field", "max_prompt_length"} <= shared
    for params in (PPOConfig, GRPOConfig, RLOOConfig):
        assert shared <= {f.name for f in fields(params)}
    for name in ("ppo", "grpo", "rloo"):
        cfg = lmforge.compose([f"aligner={name}", "aligner.rewards=[gsm8k_answer,format:0.2]",
                               "sampler.system_prompt=Answer briefly."])
        config = lmforge.stage("aligner", cfg).config
        assert config.rewards == ["gsm8k_answer", "format:0.2"] and config.system_prompt == "Answer briefly."
        with pytest.raises(ConfigError, match=r"aligner\.rewards: expected a list, got a mapping"):
            lmforge.compose([f"aligner={name}", "aligner.rewards={format: 0.2}"])

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rows = online_prompts(HH_PAIRS, PromptsAndRewards(system_prompt="Answer briefly.", max_prompt_length=64),
                          tokenizer)
    assert len(rows) == 300
    for row in rows:  # the system turn leads every prompt, and stays when a long dialogue is cut to fit
        assert row["prompt"][0] == {"role": "system", "content": "Answer briefly."}
        assert row["prompt"][-1]["role"] == "user"
        assert len(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=False)) <= 64


def test_kto_reads_unpaired_feedback_and_pairs(real_data, tmp_path):
    from lmforge.plugins.aligners.kto import load_feedback

    rows = load_feedback(real_data / "kto_en_demo.json")
    assert len(rows) == 60 and sum(r["label"] for r in rows) == 33  # the subset's 60 records, 33 of them good
    assert rows[0]["completion"][0]["role"] == "assistant" and rows[0]["prompt"][-1]["role"] == "user"
    unpaired = load_feedback(HH_PAIRS)
    assert len(unpaired) == 600 and [r["label"] for r in unpaired[:2]] == [True, False]
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": "c", "label": True},
                                                {"prompt": "p", "completion": "c", "label": "yes"}])
    with pytest.raises(DataError, match=r"bad\.jsonl: record 2: 'label' must be true or false"):
        load_feedback(bad)


def test_each_aligner_swaps_in_with_one_override():
    for name, cls in (("dpo", "DPOAligner"), ("orpo", "ORPOAligner"), ("kto", "KTOAligner"),
                      ("grpo", "GRPOAligner"), ("rloo", "RLOOAligner")):
        assert type(lmforge.stage("aligner", lmforge.compose([f"aligner={name}"]))).__name__ == cls
    cfg = lmforge.compose(["aligner=grpo", "aligner.rewards=[gsm8k_answer,format:0.2]"])
    assert lmforge.stage("aligner", cfg).config.rewards == ["gsm8k_answer", "format:0.2"]


# --- training -----------------------------------------------------------------------------------------------

def test_dpo_heldout_reward_accuracy_rises(real_data, tiny_model_dir, tiny_context, tmp_path):
    from lmforge.plugins.aligners.dpo import DPOAligner

    data = _write_jsonl(tmp_path / "pairs.jsonl", _shouting_pairs(real_data, 64))
    out = tmp_path / "dpo"
    lmforge.run_stage(DPOAligner(max_steps=12, batch_size=8, learning_rate=1e-3, beta=0.1, max_length=128,
                                 eval_fraction=0.25, save_steps=0, logging_steps=4),
                      {"model": tiny_model_dir, "data": data}, out, _context(tiny_context, tmp_path / "work"))
    evals = [m for m in _metrics(out) if "eval_rewards/accuracies" in m]
    before, after = evals[0], evals[-1]
    print(f"DPO held-out: before {before}, after {after}")
    assert before["step"] == 0 and before["eval_rewards/accuracies"] == 0.0  # policy == reference: no margin
    assert after["eval_rewards/accuracies"] >= 0.9 and after["eval_rewards/margins"] > 0.5
    # the policy's own log-probability margin (chosen - rejected) on held-out pairs widened
    margin = lambda m: m["eval_logps/chosen"] - m["eval_logps/rejected"]
    assert margin(after) > margin(before) + 5


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", [["ipo"], ["sigmoid", "sft"]])
def test_dpo_loss_variants_learn(real_data, tiny_model_dir, tiny_context, tmp_path, loss_type):
    from lmforge.plugins.aligners.dpo import DPOAligner

    data = _write_jsonl(tmp_path / "pairs.jsonl", _shouting_pairs(real_data, 32))
    out = tmp_path / "dpo"
    lmforge.run_stage(DPOAligner(max_steps=6, batch_size=8, learning_rate=1e-3, loss_type=loss_type,
                                 max_length=128, save_steps=0, logging_steps=1),
                      {"model": tiny_model_dir, "data": data}, out, _context(tiny_context, tmp_path / "work"))
    heldout = _shouting_pairs(real_data, 12, start=500)
    assert _implicit_reward_accuracy(out, tiny_model_dir, heldout) >= 0.9


def test_kto_learns_from_unpaired_labels(real_data, tiny_model_dir, tiny_context, tmp_path):
    from lmforge.plugins.aligners.kto import KTOAligner

    feedback = []
    for pair in _shouting_pairs(real_data, 48):
        feedback.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        feedback.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
    data = _write_jsonl(tmp_path / "feedback.jsonl", feedback)
    out = tmp_path / "kto"
    lmforge.run_stage(KTOAligner(max_steps=10, batch_size=8, learning_rate=1e-3, max_length=128, save_steps=0,
                                 logging_steps=1),
                      {"model": tiny_model_dir, "data": data}, out, _context(tiny_context, tmp_path / "work"))
    heldout = _shouting_pairs(real_data, 12, start=500)
    accuracy = _implicit_reward_accuracy(out, tiny_model_dir, heldout)
    print(f"KTO held-out implicit reward accuracy {accuracy:.2f}")
    assert accuracy >= 0.9


def test_orpo_widens_heldout_logp_margin(real_data, tiny_model_dir, tiny_context, tmp_path):
    from lmforge.plugins.aligners.orpo import ORPOAligner

    data = _write_jsonl(tmp_path / "pairs.jsonl", _shouting_pairs(real_data, 48))
    out = tmp_path / "orpo"
    lmforge.run_stage(ORPOAligner(max_steps=8, batch_size=8, learning_rate=1e-3, beta=0.5, max_length=192, max_prompt_length=96,
                                  save_steps=0, logging_steps=1),
                      {"model": tiny_model_dir, "data": data}, out, _context(tiny_context, tmp_path / "work"))
    heldout = _shouting_pairs(real_data, 12, start=500)

    def margins(model_dir):  # per-token log-probability, chosen minus rejected (ORPO's odds are per token)
        chosen, rejected = (_completion_logps(model_dir, heldout, k, per_token=True) for k in ("chosen", "rejected"))
        return [c - r for c, r in zip(chosen, rejected)]

    before, after = margins(tiny_model_dir), margins(out)
    print(f"ORPO per-token margin before {sum(before) / 12:.3f} after {sum(after) / 12:.3f}")
    assert sum(a > b for a, b in zip(after, before)) >= 11  # widened on (nearly) every held-out pair
    assert sum(after) / len(after) > sum(before) / len(before) + 0.1, (before, after)


def _online(name: str, **params):
    from lmforge.plugins.aligners.grpo import GRPOAligner
    from lmforge.plugins.aligners.rloo import RLOOAligner

    defaults = {"batch_size": 16, "num_generations": 8, "learning_rate": 3e-2, "rewards": ["regex_coverage"],
                "max_prompt_length": 64, "max_completion_length": 16, "logging_steps": 1, "save_steps": 0}
    return {"grpo": GRPOAligner, "rloo": RLOOAligner}[name](**{**defaults, **params})


def test_grpo_reward_rises_with_bounded_kl(real_data, tiny_model_dir, tiny_context, tmp_path):
    out = tmp_path / "grpo"
    lmforge.run_stage(_online("grpo", max_steps=20, beta=0.04),
                      {"model": tiny_model_dir, "data": real_data / GSM8K}, out,
                      _context(tiny_context, tmp_path / "work"))
    logged = [m for m in _metrics(out) if "reward" in m]
    first, last = logged[0]["reward"], sum(m["reward"] for m in logged[-3:]) / 3
    print(f"GRPO reward first {first:.3f} last3 {last:.3f}; kl max {max(m['kl'] for m in logged):.3f}")
    assert last > first + 0.2 and last > 5 * first, (first, last)
    assert all(math.isfinite(m["kl"]) and m["kl"] < 10 for m in logged)
    assert logged[0]["kl"] < 0.05  # starts at the reference


def _digit_mass(model_dir: Path, prompts: list[str]) -> float:
    """Mean next-token probability, right after the assistant tag, of tokens that contain a digit."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    digits = [i for i in range(len(tokenizer)) if any(ch.isdigit() for ch in tokenizer.decode([i]))]
    total = 0.0
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_dict=False)
            probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
            total += float(probs[digits].sum())
    return total / len(prompts)


def test_rloo_trains_on_pipeline_preference_prompts(real_data, tiny_model_dir, tiny_context, tmp_path):
    out = tmp_path / "rloo"
    # RLOO folds the KL penalty (summed over tokens) into the reward, so the reward needs a comparable scale
    lmforge.run_stage(_online("rloo", max_steps=8, beta=0.05, rewards=["regex_coverage:10"]),
                      {"model": tiny_model_dir, "data": HH_PAIRS}, out,
                      _context(tiny_context, tmp_path / "work"))
    assert {"reward", "rewards/regex_coverage/mean", "kl"} <= set(_metrics(out)[0])
    questions = [r["question"] for r in _gsm8k(real_data, 8, start=700)]  # unseen prompts of another kind
    before, after = _digit_mass(tiny_model_dir, questions), _digit_mass(out, questions)
    print(f"RLOO digit mass before {before:.4f} after {after:.4f}")
    assert after > 1.5 * before, (before, after)


# --- resume -------------------------------------------------------------------------------------------------

def _interrupted_then_resumed(make_stage, inputs, tmp_path, tiny_context, crash_training_at,
                              crash_step: int) -> tuple[Path, Path]:
    straight = tmp_path / "straight"
    lmforge.run_stage(make_stage(), inputs, straight, _context(tiny_context, tmp_path / "work-straight"))
    work, resumed = tmp_path / "work-resumed", tmp_path / "resumed"
    crash_training_at(crash_step, lambda: lmforge.run_stage(make_stage(), inputs, resumed,
                                                            _context(tiny_context, work)))
    assert not resumed.exists() and list(work.glob("checkpoint-*")), "a checkpoint survives, no half artifact"
    lmforge.run_stage(make_stage(), inputs, resumed, _context(tiny_context, work))
    return straight, resumed


def _assert_same_weights(a: Path, b: Path, atol: float):
    import torch

    left, right = _state(a), _state(b)
    assert left.keys() == right.keys()
    for key in left:
        assert torch.allclose(left[key], right[key], atol=atol), key


def test_dpo_resumes_after_interruption(real_data, tiny_model_dir, tiny_context, tmp_path, crash_training_at):
    from lmforge.plugins.aligners.dpo import DPOAligner

    data = _write_jsonl(tmp_path / "pairs.jsonl", _shouting_pairs(real_data, 32))
    straight, resumed = _interrupted_then_resumed(
        lambda: DPOAligner(max_steps=6, batch_size=4, learning_rate=1e-3, max_length=128, save_steps=2,
                           logging_steps=1),
        {"model": tiny_model_dir, "data": data}, tmp_path, tiny_context, crash_training_at, crash_step=3)
    _assert_same_weights(straight, resumed, atol=1e-5)
    before = _state(tiny_model_dir)
    assert any(not (before[k] == v).all() for k, v in _state(resumed).items())


def test_grpo_resumes_after_interruption(real_data, tiny_model_dir, tiny_context, tmp_path, crash_training_at):
    data = _write_jsonl(tmp_path / "gsm8k.jsonl", _gsm8k(real_data, 40))
    straight, resumed = _interrupted_then_resumed(
        lambda: _online("grpo", max_steps=6, batch_size=8, num_generations=4, learning_rate=1e-3, beta=0.04,
                        rewards=["regex_coverage", "gsm8k_answer"], save_steps=2),
        {"model": tiny_model_dir, "data": data}, tmp_path, tiny_context, crash_training_at, crash_step=3)
    _assert_same_weights(straight, resumed, atol=1e-5)


def test_reward_model_dir_scores_and_combines(tiny_model_dir, tmp_path):
    import torch
    from lmforge.plugins.aligners.rewards import RewardModelScorer, combine_rewards
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(str(tiny_model_dir), num_labels=1)
    torch.manual_seed(0)
    reward_model = AutoModelForSequenceClassification.from_config(config)
    rm_dir = tmp_path / "rm"
    reward_model.save_pretrained(str(rm_dir))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(rm_dir))

    completions, prompts = ["#### 4", "I do not know", "2 + 2 = 4"], ["2+2?"] * 3
    scores = RewardModelScorer(rm_dir, batch_size=2)(completions, prompts)
    assert len(scores) == 3 and len(set(scores)) == 3 and all(math.isfinite(s) for s in scores)
    combined = combine_rewards(["format"], reward_model=rm_dir, reward_model_weight=0.5)
    assert combined(completions, prompts) == pytest.approx([1.0 + 0.5 * scores[0], 0.5 * scores[1], 0.5 * scores[2]],
                                                          abs=1e-5)
    with pytest.raises(ConfigError, match="not a model directory"):
        RewardModelScorer(tmp_path)
