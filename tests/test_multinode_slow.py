"""Two accelerate "machines" on 127.0.0.1: one run directory, one artifact; a killed rank stops the other.

Each machine is its own ``accelerate launch --num_machines 2 --machine_rank R`` with one process, as on a
cluster of two nodes sharing a file system; they meet at ``--main_process_ip 127.0.0.1``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lmforge
import pytest

TINY = ["hardware=cpu", "run.quiet=true", "run.report=false", "evaluation=null", "pipeline=pretrain_only",
        "pretrainer=lean", "pretrainer.block_size=32", "tokenizer.vocab_size=384", "model.hidden_size=32",
        "model.intermediate_size=64", "model.num_hidden_layers=1", "model.num_attention_heads=2",
        "model.num_key_value_heads=2"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machines(root: Path, overrides: list[str]) -> list[subprocess.Popen]:
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LMFORGE_CACHE_DIR": str(root / "cache")}
    return [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                              "--num_processes", "2", "--num_machines", "2", "--machine_rank", str(rank),
                              "--main_process_ip", "127.0.0.1", "--main_process_port", port,
                              "--mixed_precision", "no", "--dynamo_backend", "no",
                              "-m", "lmforge.cli", "run", *TINY, f"run.root={root}", *overrides],
                             cwd=root, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for rank in (0, 1)]


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append((proc.returncode, out, err))
    return results


def checkpoint_steps(checkpoints: Path) -> list[int]:
    """The steps of the whole (renamed) checkpoints written so far."""
    return [int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]


@pytest.mark.slow
def test_two_machines_finish_one_pretraining_run(tmp_path):
    results = finish(machines(tmp_path, ["pretrainer.max_steps=4", "pretrainer.save_steps=2"]))
    for code, _, err in results:
        assert code == 0, err[-3000:]
    assert sum(out.count("lmforge: run complete") for _, out, _ in results) == 1  # the main process says it
    run = tmp_path / "default"
    assert lmforge.is_complete(run / "pretrainer")
    assert lmforge.read_manifest(run / "pretrainer")["metrics"]["world_size"] == 2
    assert not [p.name for p in run.iterdir() if p.name.endswith(".partial")]


@pytest.mark.slow
def test_a_killed_rank_stops_the_other_with_one_line_and_the_rerun_resumes(tmp_path):
    # many steps, so the kill lands mid-stage however fast the machine: the first kept checkpoint is the cue
    overrides = ["pretrainer.max_steps=400", "pretrainer.save_steps=5"]
    procs = machines(tmp_path, overrides)
    checkpoints = tmp_path / "default" / ".work" / "pretrainer"
    deadline = time.monotonic() + 400
    while not checkpoint_steps(checkpoints) and time.monotonic() < deadline:
        if not all(p.poll() is None for p in procs):
            pytest.fail("a machine ended before the first checkpoint: "
                        + " | ".join(f"exit {code}: {err[-1500:]}" for code, _, err in finish(procs)))
        time.sleep(0.05)
    assert checkpoint_steps(checkpoints), "pretraining never reached its first checkpoint"
    worker = subprocess.run(["pgrep", "-P", str(procs[1].pid)], check=True, capture_output=True, text=True).stdout.split()
    os.kill(int(worker[0]), signal.SIGKILL)  # machine 1's training process, mid-stage
    killed_at = time.monotonic()
    code, _, err = finish(procs[:1], timeout=120)[0]
    assert time.monotonic() - killed_at < 60
    finish(procs[1:], timeout=120)
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("lmforge: error:")]
    assert len(lines) == 1 and "rank 0 of 2: another process of this run stopped" in lines[0], err[-3000:]
    assert not lmforge.is_complete(tmp_path / "default" / "pretrainer")  # nothing that looks whole
    assert not [p.name for p in (tmp_path / "default").iterdir() if p.name.endswith((".partial", ".scratch"))]
    results = finish(machines(tmp_path, overrides))
    for rerun_code, _, rerun_err in results:
        assert rerun_code == 0, rerun_err[-3000:]
    metrics = lmforge.read_manifest(tmp_path / "default" / "pretrainer")["metrics"]
    assert metrics["resumed_from_step"] >= 5 and metrics["world_size"] == 2
