"""Slow aligner checks: each aligner swapped into the pipeline by one override, and a real SIGKILL resume.

The kill test runs ``lmforge run`` in a child process, kills it with SIGKILL once a checkpoint exists,
re-runs the same command, and compares the final weights with an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmforge
import pytest

pytestmark = pytest.mark.slow


def _overrides(root: Path, model_dir: Path, aligner: str, *extra: str) -> list[str]:
    return [f"run.root={root}", "run.quiet=true", "pipeline=align_only", "hardware=cpu",
            f"pipeline.stages.aligner.model={model_dir}", f"aligner={aligner}", "aligner.max_steps=4",
            "sampler.max_new_tokens=4", *extra]


@pytest.mark.parametrize("aligner", ["kto", "orpo", "grpo", "rloo"])
def test_aligner_swaps_into_the_pipeline(tiny_model_dir, tmp_path, aligner):
    extra = ["aligner.max_completion_length=8", "aligner.max_prompt_length=64"] if aligner in ("grpo", "rloo") else []
    result = lmforge.run(lmforge.compose(_overrides(tmp_path, tiny_model_dir, aligner, *extra)))
    manifest = result.manifests["aligner"]
    assert manifest["plugin"] == aligner and manifest["metrics"]["train_loss"] == manifest["metrics"]["train_loss"]
    assert (result.artifacts["aligner"] / "model.safetensors").is_file()
    assert (result.artifacts["sampler"] / "completions.jsonl").is_file()


def test_grpo_resumes_after_sigkill(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    extra = ["aligner.max_steps=8", "aligner.save_steps=2", "aligner.logging_steps=1", "aligner.batch_size=8",
             "aligner.max_completion_length=12", "aligner.max_prompt_length=48", "aligner.learning_rate=1e-3",
             "aligner.rewards=[regex_coverage,length:0.5]"]
    killed_root, straight_root = tmp_path / "killed", tmp_path / "straight"
    code = ("import sys, lmforge; lmforge.run(lmforge.compose(sys.argv[1:]))")
    child = subprocess.Popen([sys.executable, "-c", code, *_overrides(killed_root, tiny_model_dir, "grpo", *extra)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    work = killed_root / "default" / ".work" / "aligner"
    deadline = time.time() + 240
    while not any(work.glob("checkpoint-4/trainer_state.json")) and child.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert child.poll() is None, "the child finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (killed_root / "default" / "aligner" / "manifest.json").exists()

    resumed = lmforge.run(lmforge.compose(_overrides(killed_root, tiny_model_dir, "grpo", *extra)))
    straight = lmforge.run(lmforge.compose(_overrides(straight_root, tiny_model_dir, "grpo", *extra)))
    left = load_file(str(resumed.artifacts["aligner"] / "model.safetensors"))
    right = load_file(str(straight.artifacts["aligner"] / "model.safetensors"))
    for key in left:
        assert torch.allclose(left[key], right[key], atol=1e-5), key


def test_grpo_with_a_reward_model_dir_in_the_pipeline(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(str(tiny_model_dir), num_labels=1)
    torch.manual_seed(0)
    rm_dir = tmp_path / "rm"
    AutoModelForSequenceClassification.from_config(config).save_pretrained(str(rm_dir))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(rm_dir))
    result = lmforge.run(lmforge.compose(_overrides(
        tmp_path, tiny_model_dir, "grpo", f"+pipeline.stages.aligner.reward_model={rm_dir}",
        "aligner.rewards=[format]", "aligner.reward_model_weight=0.5", "aligner.max_completion_length=8",
        "aligner.max_prompt_length=64", "aligner.logging_steps=1")))
    metrics = result.manifests["aligner"]["metrics"]
    assert "rewards/reward_model/mean" in metrics and "rewards/format/mean" in metrics
