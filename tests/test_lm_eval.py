"""lm-eval adapter: tasks from local YAML + jsonl run offline, and lm-eval's numbers equal our own log-probs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lmforge
import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'lmforge[lmeval]')")

QUESTIONS = [
    ("The sky on a clear day is", ["blue", "green", "loud"], 0),
    ("Two plus two equals", ["three", "four", "nine"], 1),
    ("Water freezes at zero degrees", ["Celsius", "Kelvin", "bananas"], 0),
    ("The opposite of hot is", ["warm", "cold", "spicy", "tall"], 1),
    ("A cat says", ["woof", "moo", "meow"], 2),
    ("The first month of the year is", ["January", "March", "December"], 0),
    ("Bees make", ["milk", "honey", "silk"], 1),
    ("The capital of France is", ["Berlin", "Madrid", "Paris", "Rome"], 2),
    ("Ice is frozen", ["water", "sand", "air"], 0),
    ("A week has seven", ["hours", "days", "years"], 1),
]

MC_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""

ROLLING_TASK = """task: tiny_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
  - metric: byte_perplexity
"""

GENERATION_TASK = """task: own_words
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["Question:"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
"""


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), split into tokens the way lm-eval does (encode the whole, cut the context)."""
    import torch

    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    continuation_ids = whole[len(context_ids):]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([whole[:-1]])).logits[0].float().log_softmax(-1)
    positions = range(len(whole) - 1 - len(continuation_ids), len(whole) - 1)
    return sum(logits[p, t].item() for p, t in zip(positions, continuation_ids))


def text_logprob(model, tokenizer, text: str) -> float:
    """log p(text) after the begin-of-text token (else end-of-text), as lm-eval's rolling windows score it."""
    import torch

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    inputs = [prefix] + ids[:-1]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([inputs])).logits[0].float().log_softmax(-1)
    return sum(logits[p, t].item() for p, t in enumerate(ids))


@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory, tiny_model_dir):
    """Three local tasks: real answers, answers chosen as the model's own favourite, and rolling text."""
    from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    scores = [[continuation_logprob(model, tokenizer, q, " " + c) for c in choices] for q, choices, _ in QUESTIONS]
    best = [max(range(len(s)), key=lambda i: (s[i], -i)) for s in scores]
    best_normalised = [max(range(len(s)), key=lambda i: (s[i] / len(c[i]), -i))
                       for s, (_, c, _) in zip(scores, QUESTIONS)]
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    data = root / "data"
    data.mkdir()
    real = write_jsonl(data / "quiz.jsonl", [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS])
    favourite = write_jsonl(data / "quiz_favourite.jsonl",
                            [{"question": q, "choices": c, "answer": b} for (q, c, _), b in zip(QUESTIONS, best)])
    raw_text = Path(lmforge.sample_data_path("raw_text.jsonl")).read_text().splitlines()
    texts = [json.loads(line)["text"][:400] for line in raw_text[:4]]
    text_file = write_jsonl(data / "text.jsonl", [{"text": t} for t in texts])
    (root / "quiz.yaml").write_text(MC_TASK.format(name="tiny_quiz", data=real))
    (root / "quiz_favourite.yaml").write_text(MC_TASK.format(name="tiny_quiz_favourite", data=favourite))
    (root / "text.yaml").write_text(ROLLING_TASK.format(data=text_file))
    text_logprobs = [text_logprob(model, tokenizer, t) for t in texts]
    expected = {
        "tiny_quiz/acc": sum(b == a for b, (_, _, a) in zip(best, QUESTIONS)) / len(QUESTIONS),
        "tiny_quiz/acc_norm": sum(b == a for b, (_, _, a) in zip(best_normalised, QUESTIONS)) / len(QUESTIONS),
        "tiny_quiz_favourite/acc": 1.0,
        "tiny_quiz_favourite/acc_norm": sum(n == b for n, b in zip(best_normalised, best)) / len(QUESTIONS),
        "first_3/acc_norm": sum(n == b for n, b in zip(best_normalised[:3], best[:3])) / 3,
        "tiny_text/bits_per_byte": -sum(text_logprobs) / sum(len(t.encode()) for t in texts) / math.log(2),
    }
    return root, expected


def test_local_tasks_run_offline_and_match_our_own_log_probs(local_tasks, tiny_model_dir, tiny_context):
    from lmforge.plugins.evaluators.lm_eval import LMEvalHarness

    root, expected = local_tasks
    evaluator = LMEvalHarness(tasks=["tiny_quiz", "tiny_quiz_favourite", "tiny_text"], include_path=str(root))
    metrics = evaluator.evaluate(tiny_model_dir, {}, tiny_context)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    for name in ("tiny_quiz/acc", "tiny_quiz/acc_norm", "tiny_quiz_favourite/acc", "tiny_quiz_favourite/acc_norm"):
        assert 0.0 <= metrics[name] <= 1.0 and metrics[name] == pytest.approx(expected[name]), name
    assert metrics["tiny_quiz/acc_stderr"] > 0
    # an untrained model over a 1k vocabulary: about log2(1024)=10 bits per token, a few bytes per token
    assert metrics["tiny_text/bits_per_byte"] == pytest.approx(expected["tiny_text/bits_per_byte"], rel=1e-4)
    assert metrics["tiny_text/byte_perplexity"] == pytest.approx(2 ** metrics["tiny_text/bits_per_byte"], rel=1e-4)

    limited = LMEvalHarness(tasks=["tiny_quiz_favourite"], include_path=str(root), limit=3)
    assert limited.evaluate(tiny_model_dir, {}, tiny_context) == {
        "tiny_quiz_favourite/acc": 1.0, "tiny_quiz_favourite/acc_norm": pytest.approx(expected["first_3/acc_norm"]),
        "tiny_quiz_favourite/acc_stderr": 0.0, "tiny_quiz_favourite/acc_norm_stderr": pytest.approx(
            (expected["first_3/acc_norm"] * (1 - expected["first_3/acc_norm"]) / 2) ** 0.5)}


def test_generation_tasks_decode_greedily_from_the_artifact(tiny_model_dir, tiny_context, tmp_path):
    """Targets are our own greedy continuations (one deliberately wrong): exact match is exactly 3 of 4."""
    from lmforge.plugins.evaluators.lm_eval import LMEvalHarness
    from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    rows = []
    for question, _, _ in QUESTIONS[:4]:
        ids = tokenizer(f"Question: {question}\nAnswer:", add_special_tokens=False, return_tensors="pt").input_ids
        output = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        rows.append({"question": question, "answer": tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)})
    rows[-1]["answer"] += " (not what the model says)"
    data = write_jsonl(tmp_path / "own_words.jsonl", rows)
    (tmp_path / "own_words.yaml").write_text(GENERATION_TASK.format(data=data))
    metrics = LMEvalHarness(tasks=["own_words"], include_path=str(tmp_path)).evaluate(tiny_model_dir, {}, tiny_context)
    assert metrics["own_words/exact_match"] == 0.75


def test_hub_data_and_unknown_tasks_fail_with_one_line(local_tasks, tiny_model_dir, tiny_context, tmp_path):
    from lmforge.plugins.evaluators.lm_eval import LMEvalHarness

    root, _ = local_tasks
    with pytest.raises(lmforge.ConfigError, match=r"evaluation\.lm_eval\.tasks: unknown task 'tiny_quizz'.*tiny_quiz"):
        LMEvalHarness(tasks=["tiny_quizz"], include_path=str(root)).task_manager()
    with pytest.raises(lmforge.ConfigError, match=r"evaluation\.lm_eval\.tasks: name at least one"):
        LMEvalHarness(include_path=str(root))
    with pytest.raises(lmforge.ConfigError, match=r"evaluation\.lm_eval\.include_path"):
        LMEvalHarness(tasks=["tiny_quiz"], include_path=str(tmp_path / "missing"))
    with pytest.raises(lmforge.ConfigError, match=r"evaluation\.lm_eval\.num_fewshots: unknown key"):
        LMEvalHarness(tasks=["tiny_quiz"], num_fewshots=2)
    hub_tasks = tmp_path / "hub_tasks"
    hub_tasks.mkdir()
    (hub_tasks / "remote.yaml").write_text(MC_TASK.replace("dataset_path: json", "dataset_path: lmforge-test/no-such-set")
                                           .format(name="remote_quiz", data="test.jsonl"))
    with pytest.raises(lmforge.ConfigError, match=r"evaluation\.lm_eval\.tasks: the data of remote_quiz is not on"):
        LMEvalHarness(tasks=["remote_quiz"], include_path=str(hub_tasks)).evaluate(tiny_model_dir, {}, tiny_context)


def test_hub_offline_blocks_downloads_only_while_evaluating():
    import datasets.config
    import huggingface_hub.constants
    from lmforge.plugins.evaluators.lm_eval import hub_offline

    saved = huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = False
    try:
        with hub_offline():
            assert huggingface_hub.constants.is_offline_mode() and datasets.config.HF_HUB_OFFLINE
        assert not huggingface_hub.constants.HF_HUB_OFFLINE and not datasets.config.HF_HUB_OFFLINE
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def test_lm_eval_runs_inside_a_stage_from_config(local_tasks, tiny_model_dir, tmp_path):
    root, _ = local_tasks
    cfg = lmforge.compose([f"run.root={tmp_path}", "run.name=lme", "pipeline=sft_only", "run.quiet=true",
                           f"pipeline.stages.finetuner.model={tiny_model_dir}", "finetuner.max_steps=1",
                           "finetuner.learning_rate=1e-12",  # one step that leaves the weights as they are
                           f"evaluation.finetuner=[{{name:lm_eval,tasks:[tiny_quiz_favourite],include_path:{root}}}]"])
    result = lmforge.run(cfg)
    evaluation = json.loads((result.artifacts["finetuner"] / "eval.json").read_text())
    manifest = lmforge.read_manifest(result.artifacts["finetuner"])
    assert evaluation["lm_eval"]["tiny_quiz_favourite/acc"] == 1.0  # weights unchanged: the model still agrees
    assert manifest["metrics"]["eval/lm_eval/tiny_quiz_favourite/acc"] == 1.0
    bad = lmforge.compose([f"run.root={tmp_path}", "run.name=lme2", "pipeline=sft_only",
                           f"pipeline.stages.finetuner.model={tiny_model_dir}",
                           f"evaluation.finetuner=[{{name:lm_eval,task:[tiny_quiz],include_path:{root}}}]"])
    with pytest.raises(lmforge.ConfigError, match=r"evaluation\.lm_eval\.task: unknown key.*did you mean 'tasks'"):
        lmforge.run(bad)
