"""Several processes of one run (``accelerate launch``, gloo on CPU): the main process alone runs the
single-process stages and writes every artifact, the others wait on a broadcast (no file polling) and
stop with the main process's message when it fails; every training stage runs under 2 processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import lmforge
import pytest

RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import lmforge

    out, fail = Path(sys.argv[1]), sys.argv[2] == "fail"
    ctx = lambda name: lmforge.RunContext(stage_name=name, quiet=True, work_dir=out / ".work" / name,
                                          hardware=lmforge.Hardware(device="cpu"))

    class Writes(lmforge.Sampler):  # single-process by nature
        inputs = {}

        def run(self, inputs, output_dir, context):
            (out / f"sampler-ran-on-{context.rank}").touch()
            if fail:
                raise lmforge.DataError("prompts.jsonl:3: no 'prompt' field")
            (output_dir / "completions.jsonl").write_text("from rank %d\\n" % context.rank)
            return output_dir

    class Trains(lmforge.Finetuner):  # collective: every rank runs it
        inputs = {}

        def run(self, inputs, output_dir, context):
            import torch, torch.distributed as dist
            total = torch.tensor([context.rank + 1.0])
            dist.all_reduce(total)
            (output_dir / "total.json").write_text(json.dumps(float(total)))
            return output_dir

    rank = lmforge.RunContext().rank
    _, manifest = lmforge.run_stage(Writes(), {}, out / "sampler", ctx("sampler"), fingerprint="f1")
    _, trained = lmforge.run_stage(Trains(), {}, out / "finetuner", ctx("finetuner"), fingerprint="f2")
    (out / f"rank{rank}.json").write_text(json.dumps([manifest["fingerprint"], trained["fingerprint"]]))
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_ranks(tmp_path: Path, mode: str) -> list[subprocess.CompletedProcess]:
    """The two processes ``accelerate launch`` would start (torchrun's environment), run side by side."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(tmp_path), mode], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(r), "LOCAL_RANK": str(r),
                                   "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": str(port), "LMFORGE_RANK_WAIT": "120"})
             for r in (0, 1)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results


def test_main_process_alone_runs_single_process_stages_and_the_others_get_its_manifest(tmp_path):
    ranks = two_ranks(tmp_path, "ok")
    assert [r.returncode for r in ranks] == [0, 0], ranks[1].stderr[-3000:] + ranks[0].stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("sampler-ran-on-*")) == ["sampler-ran-on-0"]
    assert (tmp_path / "sampler" / "completions.jsonl").read_text() == "from rank 0\n"
    assert json.loads((tmp_path / "finetuner" / "total.json").read_text()) == 3.0  # both ranks trained
    assert json.loads((tmp_path / "rank1.json").read_text()) == json.loads((tmp_path / "rank0.json").read_text())
    assert not list(tmp_path.glob("*.scratch")) and not list(tmp_path.glob("*.partial"))


def test_other_ranks_stop_with_the_main_process_error(tmp_path):
    ranks = two_ranks(tmp_path, "fail")
    assert ranks[0].returncode != 0 and "prompts.jsonl:3: no 'prompt' field" in ranks[0].stderr
    assert ranks[1].returncode != 0
    assert "sampler: the main process failed: DataError: prompts.jsonl:3" in ranks[1].stderr
    assert not (tmp_path / "sampler").exists() and not (tmp_path / "finetuner").exists()


# ---------------------------------------------------------------- every training stage under accelerate launch

def launch(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "--main_process_port", str(free_port()), *args],
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", "LMFORGE_CACHE_DIR": str(cwd / "cache")},
                          capture_output=True, text=True,
                          timeout=timeout, check=False)


TINY = ["hardware=cpu", "run.quiet=true", "run.report=false", "tokenizer.vocab_size=384", "model.hidden_size=32",
        "model.intermediate_size=64", "model.num_hidden_layers=1", "model.num_attention_heads=2",
        "model.num_key_value_heads=2"]


@pytest.mark.slow
def test_lean_pretraining_then_sft_then_dpo_under_two_processes(tmp_path):
    """The run that used to hang at the finetuner: the lean loop tore the process group down."""
    done = launch(["-m", "lmforge.cli", "run", *TINY, f"run.root={tmp_path}", "pretrainer=lean",
                   "pretrainer.max_steps=3", "pretrainer.save_steps=2", "pretrainer.block_size=32",
                   "finetuner.max_steps=2", "aligner.max_steps=2", "~pipeline.stages.sampler"], tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("lmforge: run complete") == 1, done.stdout  # said by the main process only
    run = tmp_path / "default"
    for stage in ("cleaner", "tokenizer", "pretrainer", "finetuner", "aligner"):
        assert lmforge.is_complete(run / stage), stage
    assert lmforge.read_manifest(run / "pretrainer")["metrics"]["world_size"] == 2
    assert not [p.name for p in run.iterdir() if p.name.endswith((".partial", ".scratch"))]


ALIGNERS_SCRIPT = textwrap.dedent("""
    import sys
    import lmforge
    from lmforge.pipeline import resolve_config

    root, model, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    cfg = resolve_config(lmforge.compose([f"run.root={root}", *overrides]))
    prefs, prompts = lmforge.sample_data_path("preferences.jsonl"), cfg["data"]["prompts"]
    steps = {"max_steps": 2, "save_steps": 0}
    stages = {}
    for name in ("orpo", "kto", "grpo", "rloo", "reward_model", "ppo"):
        node = resolve_config(lmforge.compose([f"aligner={name}"]))["aligner"]
        cfg[name] = {**node, "kind": "aligner", **steps}
        data = prompts if name in ("grpo", "rloo", "ppo") else prefs
        stages[name] = {"model": model, "data": data}
    stages["ppo"]["reward_model"] = "stage:reward_model"
    cfg["grpo"].update(batch_size=4, num_generations=2, max_completion_length=8)
    cfg["rloo"].update(batch_size=4, num_generations=2, max_completion_length=8)
    cfg["ppo"].update(rollout_batch_size=4, num_mini_batches=1, ppo_epochs=1, max_response_length=8)
    cfg["pretrainer"] = {**cfg["pretrainer"], "max_steps": 2, "save_steps": 0, "block_size": 32}
    cfg["pipeline"]["stages"] = {"tokenizer": {"text": cfg["data"]["raw_text"]},
                                 "pretrainer": {"text": cfg["data"]["raw_text"], "tokenizer": "stage:tokenizer"},
                                 **stages}
    lmforge.run(cfg)
""")


@pytest.mark.slow
def test_hf_pretrainer_and_every_aligner_under_two_processes(tmp_path, tiny_model_dir):
    script = tmp_path / "aligners.py"
    script.write_text(ALIGNERS_SCRIPT)
    done = launch([str(script), str(tmp_path), str(tiny_model_dir), *TINY, "pretrainer=hf_trainer"], tmp_path,
                  timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    run = tmp_path / "default"
    for stage in ("pretrainer", "orpo", "kto", "grpo", "rloo", "reward_model", "ppo"):
        assert lmforge.is_complete(run / stage), stage
    assert lmforge.read_manifest(run / "pretrainer")["metrics"]["world_size"] == 2
    assert not [p.name for p in run.iterdir() if p.name.endswith((".partial", ".scratch"))]
