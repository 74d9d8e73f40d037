"""The spine end to end: the default pipeline on the bundled data, swaps, skips, resume, errors, plugins."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmforge
import pytest

FAST = ["model=tiny", "evaluation=null", "reward_model.max_steps=2", "preferences.samples=2",
        "preferences.max_new_tokens=8", "preferences.known_questions=20", "tokenizer.vocab_size=512", "pretrainer.max_steps=20", "pretrainer.save_steps=10",
        "pretrainer.eval_steps=10", "pretrainer.logging_steps=5", "finetuner.max_steps=4", "aligner.max_steps=2",
        "aligner.logging_steps=1",
        "sampler.max_new_tokens=8", "run.quiet=true"]
STAGES = ["cleaner", "tokenizer", "pretrainer", "finetuner", "preferences", "reward_model", "aligner", "sampler"]
REPO = Path(__file__).resolve().parents[1]


def cli(*args, cwd, env_extra=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "lmforge.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    result = lmforge.run(lmforge.compose([f"run.root={root}", "run.name=e2e", "run.trackers=[tensorboard]", *FAST]))
    return root, result


def test_report_renders_with_real_plots_matching_manifests(default_run):
    from PIL import Image

    _, result = default_run
    report = (result.run_dir / "report.md").read_text()
    assert (result.run_dir / "report.html").read_text().startswith("<!doctype html>")
    for name in STAGES:
        seconds = lmforge.read_manifest(result.artifacts[name])["seconds"]
        assert f"| {name} | " in report and f"| {seconds:.1f} |" in report
    cleaner = json.loads((result.artifacts["cleaner"] / "report.json").read_text())
    assert f"Kept **{cleaner['docs_out']}** of {cleaner['docs_in']} documents" in report
    plots = sorted((result.run_dir / "report_plots").glob("*.png"))
    names = [p.name for p in plots]
    assert any(n.startswith("pretrainer_loss") for n in names) and any(n.startswith("aligner_") for n in names), names
    for plot in plots:
        assert f"report_plots/{plot.name}" in report
        assert plot.stat().st_size > 5000
        assert Image.open(plot).size == (640, 360)


def test_tensorboard_events_hold_the_training_loss(default_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, result = default_run
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    loss = events.Scalars("pretrainer/loss")
    logged = [json.loads(x) for x in (result.artifacts["pretrainer"] / "metrics.jsonl").read_text().splitlines()]
    expected = [(r["step"], r["loss"]) for r in logged if "loss" in r]
    assert [(e.step, round(e.value, 4)) for e in loss] == [(s, round(v, 4)) for s, v in expected]


def test_unknown_tracker_fails_before_any_stage(tmp_path):
    with pytest.raises(lmforge.PluginNotFound, match="unknown tracker 'tensorbord'.*tensorboard"):
        lmforge.run(lmforge.compose([f"run.root={tmp_path}", "run.trackers=[tensorbord]"]))
    assert not list(tmp_path.rglob("manifest.json"))


def test_default_pipeline_runs_all_eight_stages(default_run):
    root, result = default_run
    assert result.ran == STAGES
    for name in STAGES:
        manifest = lmforge.read_manifest(result.artifacts[name])
        assert manifest["stage"] == name and manifest["seconds"] > 0
        assert manifest["versions"]["transformers"] and manifest["config"]["run"]["name"] == "e2e"
        assert all(v["hash"] for v in manifest["inputs"].values())
        assert not (root / "e2e" / f"{name}.partial").exists()
    assert lmforge.read_manifest(result.artifacts["pretrainer"])["metrics"]["eval_loss"] > 0
    assert lmforge.read_manifest(result.artifacts["finetuner"])["inputs"]["model"]["hash"].startswith("artifact:")
    lines = (result.artifacts["sampler"] / "completions.jsonl").read_text().splitlines()
    with open(lmforge.sample_data_path("prompts.jsonl")) as handle:  # the evaluation prompts
        asked = sum(1 for _ in handle)
    assert len(lines) == asked and all("completion" in json.loads(line) for line in lines)


def test_final_model_opens_with_vanilla_transformers(default_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, result = default_run
    model_dir = str(result.artifacts["aligner"])
    assert (result.artifacts["aligner"] / "model.safetensors").is_file()
    assert not list(result.artifacts["aligner"].glob("*.bin"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|system|>Be brief.<|end|>" in text and text.endswith("<|assistant|>")
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    torch.manual_seed(0)
    output = model.generate(**encoded, max_new_tokens=10, do_sample=True, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[1] > encoded["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(output[0][encoded["input_ids"].shape[1]:]), str)


def test_rerun_skips_complete_stages_and_override_swaps_aligner(default_run):
    root, _ = default_run
    second = lmforge.run(lmforge.compose([f"run.root={root}", "run.name=e2e", *FAST, "aligner=orpo"]))
    assert second.skipped == ["cleaner", "tokenizer", "pretrainer", "finetuner", "preferences", "reward_model"]
    assert second.ran == ["aligner", "sampler"]
    assert "skipped" not in json.dumps(second.manifests["aligner"]["metrics"])
    manifest = lmforge.read_manifest(second.artifacts["aligner"])
    assert manifest["plugin"] == "orpo" and manifest["implementation"].endswith(":ORPOAligner")
    third = lmforge.run(lmforge.compose([f"run.root={root}", "run.name=e2e", *FAST, "aligner=orpo"]))
    assert third.ran == [] and len(third.skipped) == 8


def test_one_stage_alone_takes_an_earlier_artifact_by_path(default_run, tmp_path):
    _, result = default_run
    cfg = lmforge.compose([f"run.root={tmp_path}", "run.name=alone", "pipeline=sample_only", "run.quiet=true",
                           f"pipeline.stages.sampler.model={result.artifacts['finetuner']}",
                           "sampler.max_new_tokens=4", "sampler.do_sample=false"])
    alone = lmforge.run(cfg)
    assert alone.ran == ["sampler"]
    assert (alone.artifacts["sampler"] / "completions.jsonl").is_file()


@pytest.mark.parametrize("args, expected", [
    (["aligner.plugin=dop"], "unknown aligner 'dop' (did you mean 'dpo'?); available:"),
    (["pretrainer.max_step=3"], "pretrainer.max_step: unknown key for pretrainer 'hf_trainer' (did you mean"),
    (["pipeline=sft_only", "pipeline.stages.finetuner.model=/nonexistent/model"],
     "finetuner: input 'model' not found: /nonexistent/model"),
])
def test_config_errors_are_one_line_and_leave_nothing(tmp_path, args, expected):
    proc = cli("run", f"run.root={tmp_path}", *args, cwd=tmp_path)
    assert proc.returncode != 0
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("lmforge: error:")]
    assert len(error_lines) == 1 and expected in error_lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("manifest.json"))


def test_malformed_data_line_names_file_and_line(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad_sft.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    bad.write_text(good + "\n" + good + "\n{not json\n")
    proc = cli("run", f"run.root={tmp_path}", "pipeline=sft_only", f"data.sft={bad}",
               f"pipeline.stages.finetuner.model={tiny_model_dir}", cwd=tmp_path)
    assert proc.returncode != 0
    assert f"lmforge: error: {bad}:3: invalid JSON line" in proc.stderr, proc.stderr[-2000:]
    assert not list(tmp_path.rglob("manifest.json")) and not list(tmp_path.rglob("*.partial"))


def test_kill_during_pretraining_then_rerun_resumes(tmp_path):
    args = ["run", f"run.root={tmp_path}", "run.name=killed", "pipeline=pretrain_only", "model=tiny", "tokenizer.vocab_size=512",
            "pretrainer.max_steps=120", "pretrainer.save_steps=20", "pretrainer.logging_steps=5", "run.quiet=true"]
    checkpoint = tmp_path / "killed" / ".work" / "pretrainer" / "checkpoint-20" / "trainer_state.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmforge.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert checkpoint.exists(), "no checkpoint appeared before the run ended"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = tmp_path / "killed"
    assert lmforge.is_complete(run_dir / "tokenizer") and not (run_dir / "pretrainer").exists()

    restarted = time.time()
    rerun = cli(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "skipped as complete: cleaner, tokenizer" in rerun.stdout
    rows = [json.loads(line) for line in (run_dir / "pretrainer" / "metrics.jsonl").read_text().splitlines()]
    steps = sorted(r["step"] for r in rows if r.get("step") is not None and "loss" in r)
    assert steps[0] <= 20 and steps[-1] == 120, "metrics before the kill are kept, the run ends at max_steps"
    # Steps up to the checkpoint were logged before the kill; the re-run logged only the steps after it.
    assert all(r["time"] < restarted for r in rows if r.get("step") is not None and r["step"] <= 20), \
        "the re-run started from scratch instead of resuming"
    assert lmforge.read_manifest(run_dir / "pretrainer")["metrics"]["epoch"] > 0
    assert not (run_dir / ".work" / "pretrainer").exists()


def test_third_party_plugin_package_selected_by_override(tmp_path):
    import shutil

    target, source = tmp_path / "site", tmp_path / "lmforge-shouting"  # built from a copy: no build/ in the repo
    shutil.copytree(REPO / "examples" / "lmforge-shouting", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                              "--target", str(target), str(source)],
                             capture_output=True, text=True, check=False)
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": str(target)}
    listing = cli("plugins", cwd=tmp_path, env_extra=env)
    assert "shout" in listing.stdout and "lmforge-shouting 0.1.0" in listing.stdout
    proc = cli("run", f"run.root={tmp_path}", "run.name=shout", "pipeline=clean_only", "cleaner=shouting",
               cwd=tmp_path, env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pyarrow.parquet as pq

    texts = pq.read_table(tmp_path / "shout" / "cleaner" / "data-00000.parquet").column("text").to_pylist()
    assert texts and all(t == t.upper() for t in texts)
    assert any(c.isalpha() for c in texts[0])


def test_hydra_cfg_job_and_multirun(tiny_model_dir, tmp_path):
    shown = cli("run", "--cfg", "job", "aligner=orpo", cwd=tmp_path)
    assert shown.returncode == 0 and "plugin: orpo" in shown.stdout
    sweep = cli("run", "-m", "aligner=dpo,orpo", f"run.root={tmp_path}", "run.name=sweep", "pipeline=align_only",
                f"pipeline.stages.aligner.model={tiny_model_dir}", "aligner.max_steps=1", "sampler.max_new_tokens=2",
                "run.quiet=true", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    plugins = {lmforge.read_manifest(d)["plugin"] for d in (tmp_path / "sweep").glob("*/aligner")}
    assert plugins == {"dpo", "orpo"}


@pytest.mark.slow
def test_whole_pipeline_under_accelerate_launch_with_two_processes(tmp_path):
    """Every rank runs every stage; rank 0 alone writes artifacts, so nothing races and one run dir results."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "-m", "lmforge.cli", "run", "hardware=cpu", "pipeline=pretrain_only", f"run.root={tmp_path}",
         "model=tiny", "tokenizer.vocab_size=512", "pretrainer.max_steps=10", "pretrainer.save_steps=5", "run.quiet=true"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = lmforge.read_manifest(tmp_path / "default" / "pretrainer")
    assert manifest["metrics"]["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "default").iterdir() if p.name.endswith((".partial", ".scratch"))) == []
