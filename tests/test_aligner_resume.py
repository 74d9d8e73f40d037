"""Resume after a kill for the aligners not covered elsewhere: KTO, ORPO, RLOO and the reward model.

DPO and GRPO resume is checked in ``test_aligner_pref.py``, PPO in ``test_aligner_rm_ppo.py``. The same
contract here: a run is interrupted after a checkpoint (a metrics hook raises once a later step is
logged, as a crash would), no half-written artifact is left, the re-run picks up from the checkpoint
(its metrics start after it) and its final weights equal those of an uninterrupted run. Data is real:
GSM8K solutions preferred to the same solutions in capitals, GSM8K questions as RL prompts.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import lmforge
import pytest

GSM8K = "gsm8k_test.jsonl.gz"
MAX_STEPS, SAVE_STEPS, CRASH_STEP = 4, 2, 3  # the crash comes after checkpoint-2; the re-run does steps 3-4


def _gsm8k(real_data: Path, count: int) -> list[dict]:
    with gzip.open(real_data / GSM8K, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle.read().splitlines()[:count]]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _shouting_pairs(real_data: Path, count: int) -> list[dict]:
    return [{"prompt": r["question"], "chosen": r["answer"][:160], "rejected": r["answer"][:160].upper()}
            for r in _gsm8k(real_data, count)]


def _context(tiny_context, work_dir: Path) -> lmforge.RunContext:
    return lmforge.RunContext(stage_name="aligner", work_dir=work_dir, hardware=tiny_context.hardware,
                              quiet=True, model=dict(tiny_context.model))


def _logged_steps(output_dir: Path) -> list[int]:
    """Steps of the training-loss lines in an artifact's metrics.jsonl."""
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "loss" in row]


def _state(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _kto():
    from lmforge.plugins.aligners.kto import KTOAligner

    return KTOAligner(max_steps=MAX_STEPS, batch_size=4, learning_rate=1e-3, max_length=128,
                      save_steps=SAVE_STEPS, logging_steps=1)


def _orpo():
    from lmforge.plugins.aligners.orpo import ORPOAligner

    return ORPOAligner(max_steps=MAX_STEPS, batch_size=4, learning_rate=1e-3, max_length=192, max_prompt_length=96,
                       save_steps=SAVE_STEPS, logging_steps=1)


def _rloo():
    from lmforge.plugins.aligners.rloo import RLOOAligner

    return RLOOAligner(max_steps=MAX_STEPS, batch_size=8, num_generations=4, learning_rate=1e-3, beta=0.05,
                       rewards=["regex_coverage", "gsm8k_answer"], max_prompt_length=64, max_completion_length=16,
                       save_steps=SAVE_STEPS, logging_steps=1)


def _reward_model():
    from lmforge.plugins.aligners.reward_model import RewardModelTrainer

    return RewardModelTrainer(max_steps=MAX_STEPS, batch_size=4, learning_rate=1e-3, max_length=256,
                              eval_fraction=0.2, save_steps=SAVE_STEPS, logging_steps=1)


@pytest.mark.parametrize("make_stage", [_kto, _orpo, _rloo, _reward_model],
                         ids=["kto", "orpo", "rloo", "reward_model"])
def test_aligner_resumes_after_a_crash_with_the_same_weights(make_stage, real_data, tiny_model_dir, tiny_context,
                                                             tmp_path, crash_training_at):
    import torch

    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _shouting_pairs(real_data, 40))
    prompts = _write_jsonl(tmp_path / "gsm8k.jsonl", _gsm8k(real_data, 40))
    data = prompts if make_stage is _rloo else pairs  # KTO unpairs the pairs into good and bad answers
    inputs = {"model": tiny_model_dir, "data": data}

    straight = tmp_path / "straight"
    lmforge.run_stage(make_stage(), inputs, straight, _context(tiny_context, tmp_path / "work-straight"))
    assert _logged_steps(straight) == list(range(1, MAX_STEPS + 1))

    work, resumed = tmp_path / "work-resumed", tmp_path / "resumed"
    crash_training_at(CRASH_STEP, lambda: lmforge.run_stage(make_stage(), inputs, resumed,
                                                            _context(tiny_context, work)))
    assert not resumed.exists() and not resumed.with_name("resumed.partial").exists(), "no half-written artifact"
    assert sorted(p.name for p in work.glob("checkpoint-*")) == [f"checkpoint-{SAVE_STEPS}"]

    restarted = time.time()
    lmforge.run_stage(make_stage(), inputs, resumed, _context(tiny_context, work))
    assert _logged_steps(resumed) == list(range(1, MAX_STEPS + 1))  # the steps before the crash are kept
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert all(r["time"] < restarted for r in rows if r["step"] and r["step"] <= SAVE_STEPS), \
        "the re-run started afresh instead of from the checkpoint"

    left, right = _state(straight), _state(resumed)
    assert left.keys() == right.keys()
    worst = max(float((left[k] - right[k]).abs().max()) for k in left)
    print(f"{make_stage.__name__[1:]}: max |straight - resumed| = {worst:.2e}")
    for key in left:
        assert torch.allclose(left[key], right[key], atol=1e-5), key
    start = _state(tiny_model_dir)
    assert any(not torch.equal(start[k], right[k]) for k in start.keys() & right.keys()), "training changed nothing"
