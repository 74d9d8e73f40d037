"""Issue 15's tables, row by row, through the real CLI: every bad input or fault ends in one line.

Each row asserts the exit code, that stderr is exactly one ``lmforge: error:`` line (no traceback) naming
the key or file, and that nothing looks complete (no manifest, no sealed stage directory). Most rows call
``lmforge.cli.main`` in-process (the same code path as the console script, without ~8 s of imports per
subprocess); the rows that need a real process (a lock held by another pid, SIGKILL, Ctrl-C) spawn one.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lmforge.cli import main


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run ``lmforge *args`` in-process; (exit code, stderr)."""
    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("lmforge: error: ")]
    assert len(errors) == 1, f"expected one error line, got:\n{err}"
    assert "Traceback" not in err, err
    return errors[0]


def assert_nothing_complete(root: Path, started: bool = False) -> None:
    """No manifest (no sealed stage); unless the run got past its checks, not even its config.json."""
    if not root.exists():
        return
    manifests = list(root.rglob("manifest.json"))
    assert not manifests, f"a failed run left complete-looking artifacts: {manifests}"
    if not started:
        assert not list(root.rglob("config.json")), "a run that failed its checks wrote config.json"


# Rows of the table that must fail before anything runs, with the words the one line must contain.
CONFIG_ROWS = [
    (["run.force=maybe"], ["run.force", "true or false", "maybe"]),
    (["run.seed=abc"], ["run.seed", "integer", "abc"]),
    (["run.seed=-1"], ["run.seed", "2**32"]),
    (["run.name=../../x"], ["run.name", "'../../x'", "inside run.root"]),
    (["run.name=/etc/x"], ["run.name", "relative"]),
    (["run.nme=x"], ["run.nme", "unknown key", "did you mean 'name'"]),
    (["aligner=dpp"], ["aligner=dpp", "no such aligner option", "available"]),
    (["model.hidden_size=65"], ["model", "hidden size (65)", "attention heads (4)"]),
    (["pretrainer.lr_scheduler=cosin"], ["pretrainer.lr_scheduler", "did you mean 'cosine'"]),
    (["pretrainer.batch_size=0"], ["pretrainer.batch_size", ">= 1"]),
    (["hardware.device=gpu"], ["hardware.device", "one of: auto, cpu, cuda"]),
    (["hardware.threads=0"], ["hardware.threads", ">= 1"]),
    (["data.sft=/nonexistent/sft.jsonl"], ["finetuner", "data", "not found", "/nonexistent/sft.jsonl"]),
]


@pytest.mark.parametrize(("overrides", "words"), CONFIG_ROWS, ids=lambda v: " ".join(v) if isinstance(v, list) and
                         "=" in v[0] else None)
def test_bad_config_fails_in_one_line_before_anything_runs(capsys, tmp_path, overrides, words):
    started = time.time()
    code, err = cli(capsys, "run", f"run.root={tmp_path / 'runs'}", *overrides)
    line = one_error_line(err)
    assert code == 2, err
    for word in words:
        assert word in line, f"{word!r} missing from: {line}"
    assert_nothing_complete(tmp_path / "runs")
    assert not (tmp_path.parent / "x").exists() and not Path("/etc/x").exists()
    assert time.time() - started < 30  # checked up front: no stage ran


def test_empty_directory_as_data_input(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for key in ("raw_text", "sft", "preferences", "prompts"):
        code, err = cli(capsys, "run", f"run.root={tmp_path / 'runs'}", f"data.{key}={empty}")
        line = one_error_line(err)
        assert code == 2 and "empty" in line and str(empty) in line, line
    assert_nothing_complete(tmp_path / "runs")


def test_run_root_is_a_file(capsys, tmp_path):
    root = tmp_path / "runs"
    root.write_text("not a directory")
    code, err = cli(capsys, "run", f"run.root={root}", "pipeline=clean_only")
    line = one_error_line(err)
    assert code == 2 and "run.root" in line and "is a file" in line, line
    assert root.read_text() == "not a directory"


def test_disk_full_is_one_line_with_the_file(capsys, tmp_path):
    """A real ENOSPC (writing to /dev/full) reaching the CLI's error path: one line naming the file, exit 1."""
    from lmforge.cli import fail_with

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    try:
        with open("/dev/full", "w") as handle:
            handle.write("x" * 10)
            handle.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
        exc.filename = exc.filename or "/dev/full"
        with pytest.raises(SystemExit) as exit_info:
            fail_with(exc, run_dir=tmp_path)
    assert exit_info.value.code == 1
    line = one_error_line(capsys.readouterr().err)
    assert "no space left on device" in line and "/dev/full" in line and "traceback in" in line
    assert "OSError" in (tmp_path / "error.log").read_text()


def test_unexpected_error_one_line_log_and_debug(capsys, tmp_path, monkeypatch):
    """An exception lmforge did not foresee: one line with type and place, exit 1, traceback in error.log,
    and on screen with --debug."""
    import lmforge

    class Boom:
        @lmforge.hookimpl
        def lmforge_pipeline_start(self, run_dir, config, context):
            raise RuntimeError("boom from a plugin")

    plugin = Boom()
    lmforge.register_plugin(plugin, name="test-reliability-boom")
    monkeypatch.delenv("LMFORGE_DEBUG", raising=False)
    monkeypatch.delenv("LMFORGE_TRACEBACK", raising=False)
    try:
        root = tmp_path / "runs"
        code, err = cli(capsys, "run", f"run.root={root}", "run.name=b", "pipeline=clean_only")
        line = one_error_line(err)
        assert code == 1
        assert "RuntimeError: boom from a plugin" in line and "test_reliability.py" in line
        assert f"traceback in {root / 'b' / 'error.log'}" in line
        assert "Traceback" in (root / "b" / "error.log").read_text()
        assert_nothing_complete(root, started=True)
        code, err = cli(capsys, "--debug", "run", f"run.root={root}", "run.name=b", "pipeline=clean_only")
        assert code == 1 and "Traceback (most recent call last)" in err and "boom from a plugin" in err
    finally:
        lmforge.unregister_plugin(plugin)
        os.environ.pop("LMFORGE_DEBUG", None)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from lmforge.rundir import run_lock
run_dir = Path(sys.argv[1]); run_dir.mkdir(parents=True, exist_ok=True)
with run_lock(run_dir):
    print("held", flush=True)
    time.sleep(120)
"""


def test_second_run_on_same_name_fails_naming_the_holder_and_a_killed_holder_frees_it(capsys, tmp_path):
    root = tmp_path / "runs"
    run_dir = root / "same"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = cli(capsys, "run", f"run.root={root}", "run.name=same", "pipeline=clean_only")
        line = one_error_line(err)
        assert code == 2 and "in use by another lmforge run" in line and f"pid {holder.pid}" in line, line
        assert_nothing_complete(root)
        os.kill(holder.pid, signal.SIGKILL)  # a stale lock: its holder died without cleaning up
        holder.wait(timeout=30)
    finally:
        holder.kill()
    from lmforge.rundir import run_lock

    with run_lock(run_dir) as info:  # taken over at once, no manual cleanup
        assert info["pid"] == os.getpid()
        assert json.loads((run_dir / ".lock.holder.json").read_text())["pid"] == os.getpid()


SLOW_CLEANER = """
import sys, time
from dataclasses import dataclass, field
import lmforge
from lmforge.cli import main

@dataclass
class SlowParams:
    steps: list = field(default_factory=list)
    text_field: str = "text"

class Slow(lmforge.Cleaner):
    config_class = SlowParams

    def run(self, inputs, output_dir, context):
        print("stage started", flush=True)
        time.sleep(120)

class Plugin:
    @lmforge.hookimpl
    def lmforge_register(self, registry):
        registry.add("cleaner", "slow", Slow)

lmforge.register_plugin(Plugin(), name="slow-cleaner")
main(sys.argv[1:])
"""


def test_ctrl_c_exits_130_in_one_line_and_leaves_nothing_half_written(tmp_path):
    root = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLEANER, "run", f"run.root={root}", "run.name=c",
                             "pipeline=clean_only", "cleaner.plugin=slow", "run.report=false"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LMFORGE_DEBUG": ""})
    try:
        for line in proc.stdout:
            if "stage started" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    line = one_error_line(err)
    assert "interrupted" in line
    assert not (root / "c" / "cleaner").exists() and not (root / "c" / "cleaner.partial").exists()
    assert "KeyboardInterrupt" in (root / "c" / "error.log").read_text()
    assert not list(root.rglob("manifest.json"))


def test_run_lock_is_released_after_a_failed_run(capsys, tmp_path):
    """A run that fails after taking the lock leaves it free for the next run (no stale holder file)."""
    root = tmp_path / "runs"
    (tmp_path / "bad.txt").write_bytes(b"")
    code, err = cli(capsys, "run", f"run.root={root}", "run.name=r", "pipeline=clean_only",
                    f"data.raw_text={textwrap.dedent(str(tmp_path / 'bad.txt'))}", "run.report=false")
    assert code != 0
    one_error_line(err)
    assert not (root / "r" / ".lock.holder.json").exists()
