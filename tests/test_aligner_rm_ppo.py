"""Reward model and PPO RLHF: what they learn, that PPO resumes exactly, and how they are configured.

Data is real text: GSM8K questions as prompts, Wikipedia sentences as answers (tests/data), the
bundled HH-RLHF dialogues and the ShareGPT preference demo. Models are tiny Llamas on lmforge's own BPE
tokenizer. The PPO learning test starts from a briefly pretrained model: a random-init policy's flat
distribution over 1024 tokens gives PPO almost no signal to follow in a few iterations.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import replace
from pathlib import Path

import lmforge
import pytest
from lmforge.plugins.aligners.ppo import PPOAligner
from lmforge.plugins.aligners.reward_model import RewardModelTrainer

# 300 HH-RLHF harmless-base dialogue pairs (whole dialogues, MIT): the tests' reading of that format
HH_PAIRS = Path(__file__).parent / "data" / "hh_rlhf_pairs.jsonl"


def _context(tiny_context, work_dir: Path | None = None):
    return replace(tiny_context, metrics={}, work_dir=work_dir, _metrics_file=None)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def punctuation_count(completions, prompts, **columns):
    """A known reward: one point per '.' or ',' in the completion."""
    return [float(c.count(".") + c.count(",")) for c in completions]


class _TestRewards:
    @lmforge.hookimpl
    def lmforge_register(self, registry):
        registry.add("reward_function", "test_punctuation", punctuation_count)


@pytest.fixture(scope="module", autouse=True)
def test_reward_plugin():
    plugin = _TestRewards()
    lmforge.register_plugin(plugin, name="test-aligner-rm-ppo-rewards")
    yield
    lmforge.unregister_plugin(plugin)


@pytest.fixture(scope="module")
def gsm8k(real_data) -> Path:
    return real_data / "gsm8k_test.jsonl.gz"


@pytest.fixture(scope="module")
def shouting_preferences(tmp_path_factory, real_data) -> Path:
    """Pairs where the chosen answer is a normal sentence and the rejected one a different sentence in capitals."""
    with gzip.open(real_data / "wiki_demo.txt.gz", "rt", encoding="utf-8") as handle:
        text = handle.read()
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 40 <= len(s.strip()) <= 160]
    with gzip.open(real_data / "gsm8k_test.jsonl.gz", "rt", encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line in handle]
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("prefs") / "shouting.jsonl"
    with open(path, "w") as handle:
        for question in questions[:200]:
            chosen, rejected = rng.sample(sentences, 2)
            handle.write(json.dumps({"prompt": question[:200], "chosen": chosen, "rejected": rejected.upper()}) + "\n")
    return path


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, tiny_model_dir, tiny_context, shouting_preferences):
    out = tmp_path_factory.mktemp("rm") / "reward_model"
    stage = RewardModelTrainer(max_steps=30, batch_size=8, learning_rate=1e-3, eval_fraction=0.2, max_length=256,
                               save_steps=0, logging_steps=10)
    _, manifest = lmforge.run_stage(stage, {"model": tiny_model_dir, "data": shouting_preferences}, out,
                                    _context(tiny_context))
    return out, manifest


def test_reward_model_learns_a_property_and_reports_held_out_accuracy(reward_model_dir, tiny_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, manifest = reward_model_dir
    metrics = manifest["metrics"]
    assert metrics["eval_pairs"] == 40
    assert metrics["eval_accuracy"] >= 0.85, metrics  # chance is 0.5
    assert metrics["eval_margin"] > 0.5
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(str(tiny_model_dir)).get_vocab()
    prompt = [{"role": "user", "content": "Tell me about the river."}]
    calm = "The river flows through the old town and into the sea."
    ids = [tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": t}], return_dict=False)
           for t in (calm, calm.upper())]
    with torch.no_grad():
        scores = [model(input_ids=torch.tensor([i])).logits[0, 0].item() for i in ids]
    assert scores[0] > scores[1]


@pytest.mark.parametrize("data", ["hh", "sharegpt"])
def test_reward_model_reads_hh_dialogues_and_sharegpt_pairs(data, tmp_path, tiny_model_dir, tiny_context,
                                                           real_data):
    path = HH_PAIRS if data == "hh" else real_data / "dpo_en_demo.json"
    stage = RewardModelTrainer(max_steps=2, batch_size=4, max_length=512, eval_fraction=0.1, save_steps=0)
    _, manifest = lmforge.run_stage(stage, {"model": tiny_model_dir, "data": path}, tmp_path / "rm",
                                    _context(tiny_context))
    assert manifest["metrics"]["eval_pairs"] >= 1 and 0.0 <= manifest["metrics"]["eval_accuracy"] <= 1.0
    assert manifest["metrics"]["train_loss"] > 0


def _ppo(**overrides) -> PPOAligner:
    params = {"rollout_batch_size": 4, "num_mini_batches": 2, "ppo_epochs": 2, "learning_rate": 5e-4,
                  "max_response_length": 6, "temperature": 1.0, "rewards": ["test_punctuation"],
                  "missing_eos_penalty": None, "prompt_field": "question", "value_model": "shared", "save_steps": 0}
    params.update(overrides)
    return PPOAligner(**params)


def test_ppo_with_reward_model_logs_everything_and_starts_at_zero_kl(tmp_path, tiny_model_dir, tiny_context, gsm8k,
                                                                     reward_model_dir):
    from transformers import AutoModelForCausalLM

    stage = _ppo(max_steps=2, rewards=[], value_model="separate", missing_eos_penalty=1.0, adaptive_kl=True,
                 target_kl=0.5)
    out, _manifest = lmforge.run_stage(
        stage, {"model": tiny_model_dir, "data": gsm8k, "reward_model": reward_model_dir[0]}, tmp_path / "ppo",
        _context(tiny_context))
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "score", "kl", "entropy", "clipfrac", "value_loss", "policy_loss", "approxkl",
                "value_clipfrac", "kl_coef", "response_length", "eos_fraction", "kl_k1", "kl_k3"):
        assert key in rows[0], key
    assert abs(rows[0]["kl"]) < 1e-4  # the first rollout comes from a policy equal to the reference
    assert rows[0]["kl"] == rows[0]["kl_k1"]  # logged with the estimator in use (k1 by default)
    # reward-model scores are z-scored before the penalty: the first batch alone sets the moments, mean 0
    assert abs(rows[0]["score"]) < 1e-4 and rows[0]["reward"] < rows[0]["score"] + 1e-6
    assert rows[0]["kl_coef"] != 0.05  # the adaptive controller moved it
    assert rows[0]["reward"] <= rows[0]["score"]  # missing-EOS penalty applied to unfinished responses
    assert (out / "model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(str(out))


def test_ppo_resumes_after_a_kill_and_ends_with_the_same_weights(tmp_path, tiny_model_dir, tiny_context, gsm8k):
    from safetensors.torch import load_file

    stage = _ppo(max_steps=4, save_steps=2, value_model="separate")
    inputs = {"model": tiny_model_dir, "data": gsm8k}
    straight, _ = lmforge.run_stage(stage, inputs, tmp_path / "straight", _context(tiny_context, tmp_path / "w1"))

    class KillAtStep3:
        @lmforge.hookimpl
        def lmforge_log_metrics(self, stage_name, step, metrics, context):
            if step == 3:
                raise KeyboardInterrupt("killed")

    killer = KillAtStep3()
    lmforge.register_plugin(killer, name="test-ppo-killer")
    work = tmp_path / "w2"
    try:
        with pytest.raises(KeyboardInterrupt):
            lmforge.run_stage(stage, inputs, tmp_path / "resumed", _context(tiny_context, work))
    finally:
        lmforge.unregister_plugin(killer)
    assert not (tmp_path / "resumed").exists() and not (tmp_path / "resumed.partial").exists()
    assert sorted(p.name for p in (work / "ppo").iterdir()) == ["step-2"]
    resumed, _ = lmforge.run_stage(stage, inputs, tmp_path / "resumed", _context(tiny_context, work))
    steps = [r["step"] for r in _rows(resumed / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]  # the steps logged before the kill are kept; step 3, logged again, once
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] == b[name]).all(), name


@pytest.mark.parametrize("overrides, message", [
    ({"rewards": []}, "aligner.rewards: ppo needs a reward"),
    ({"rewards": ["no_such_reward"]}, "no_such_reward"),
    ({"rewards": {"test_punctuation": 1.0}}, "aligner.rewards: expected a list, got a mapping"),
    ({"num_mini_batches": 3}, "aligner.num_mini_batches"),
    ({"value_model": "both"}, "aligner.value_model"),
])
def test_ppo_config_errors_are_one_line(overrides, message, tmp_path, tiny_model_dir, tiny_context, gsm8k):
    with pytest.raises(lmforge.ConfigError) as info:
        lmforge.run_stage(_ppo(max_steps=1, **overrides), {"model": tiny_model_dir, "data": gsm8k},
                          tmp_path / "out", _context(tiny_context))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_ppo_rejects_a_causal_lm_as_reward_model(tmp_path, tiny_model_dir, tiny_context, gsm8k):
    with pytest.raises(lmforge.DataError, match="not a reward model"):
        lmforge.run_stage(_ppo(max_steps=1, rewards=[]), {"model": tiny_model_dir, "data": gsm8k,
                                                          "reward_model": tiny_model_dir},
                          tmp_path / "out", _context(tiny_context))


def test_rlhf_pipeline_and_one_override_swaps():
    cfg = lmforge.compose(["pipeline=rlhf", "reward_model.max_steps=3", "ppo.max_steps=2"])
    stages = dict(cfg.pipeline.stages)
    assert list(stages)[-4:] == ["preferences", "reward_model", "ppo", "sampler"]
    assert stages["ppo"]["reward_model"] == "stage:reward_model"
    resolved = lmforge.resolve_config(cfg)["pipeline"]["stages"]  # pairs of its own answers; rollouts on new questions
    assert resolved["reward_model"]["data"] == "stage:preferences/preferences.jsonl"
    assert resolved["ppo"]["data"] == lmforge.sample_data_path("preference_prompts.jsonl")
    reward_stage, ppo_stage = lmforge.stage("reward_model", cfg), lmforge.stage("ppo", cfg)
    assert isinstance(reward_stage, RewardModelTrainer) and reward_stage.config.max_steps == 3
    assert isinstance(ppo_stage, PPOAligner) and ppo_stage.config.max_steps == 2
    assert isinstance(lmforge.stage("aligner", lmforge.compose(["aligner=ppo"])), PPOAligner)
    assert isinstance(lmforge.stage("aligner", lmforge.compose(["aligner=reward_model"])), RewardModelTrainer)


@pytest.fixture(scope="module")
def pretrained_policy(tmp_path_factory, tiny_tokenizer_dir, tiny_context):
    from lmforge.plugins.pretrainers.hf_trainer import HFTrainerPretrainer

    root = tmp_path_factory.mktemp("pretrained")
    stage = HFTrainerPretrainer(max_steps=60, batch_size=8, block_size=64, learning_rate=3e-3, warmup_steps=5,
                                save_steps=0, eval_steps=1000, logging_steps=20, cache_dir=str(root / "cache"))
    out, _ = lmforge.run_stage(stage, {"text": lmforge.sample_data_path("raw_text.jsonl"),
                                       "tokenizer": tiny_tokenizer_dir}, root / "policy",
                               _context(tiny_context, root / "work"))
    return out


@pytest.mark.slow
def test_ppo_raises_a_known_reward_with_bounded_kl(tmp_path, pretrained_policy, tiny_context, gsm8k):
    """Same budget twice: a loose leash (kl_coef 0.05) and a tight one (0.5). Both raise the reward; the
    tight one keeps the policy measurably closer to the reference."""
    results = {}
    for kl_coef in (0.05, 0.5):
        stage = _ppo(max_steps=12, rollout_batch_size=16, ppo_epochs=4, max_response_length=12, kl_coef=kl_coef)
        out, _ = lmforge.run_stage(stage, {"model": pretrained_policy, "data": gsm8k}, tmp_path / f"ppo{kl_coef}",
                                   _context(tiny_context))
        rows = _rows(out / "metrics.jsonl")
        results[kl_coef] = {"first3_reward": sum(r["reward"] for r in rows[:3]) / 3,
                            "last3_reward": sum(r["reward"] for r in rows[-3:]) / 3,
                            "last3_kl": sum(r["kl"] for r in rows[-3:]) / 3,
                            "kl": [round(r["kl"], 2) for r in rows]}
    print(results)
    loose, tight = results[0.05], results[0.5]
    assert loose["last3_reward"] > loose["first3_reward"] + 1.0, loose  # >= one more '.'/',' per answer
    assert tight["last3_reward"] > tight["first3_reward"] + 0.3, tight
    assert max(loose["kl"]) < 20  # nats per 12-token response
    assert tight["last3_kl"] < loose["last3_kl"] / 2, results


def test_reward_accuracy_evaluator_is_the_reward_models_own_pairwise_accuracy(reward_model_dir, shouting_preferences,
                                                                              tiny_context):
    from lmforge.plugins.aligners.reward_model import RewardScorer, pairwise_accuracy
    from lmforge.plugins.evaluators import RewardAccuracy
    from lmforge.plugins.lib.formats import load_preferences

    out, _ = reward_model_dir
    result = RewardAccuracy(data=str(shouting_preferences), limit=40).evaluate(out, {}, _context(tiny_context))
    expected = pairwise_accuracy(RewardScorer.from_dir(out), load_preferences(shouting_preferences)[:40])
    assert result == pytest.approx(expected) and result["pairs"] == 40 and result["accuracy"] >= 0.85
