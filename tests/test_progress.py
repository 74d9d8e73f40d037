"""The run console: bars, warnings and trainer dicts routed away from the terminal, a few plain lines per stage
where stderr is no terminal, a live display where it is one, nothing under ``run.quiet``, library state
restored afterwards. Runs go through lmforge's real pipeline with a small in-test stage that behaves like a
trainer (a tqdm bar, ``tqdm.write`` of a metrics dict, a FutureWarning, logged metrics)."""

from __future__ import annotations

import logging
import os
import pty
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import lmforge
import pytest


@dataclass
class NoisyConfig:
    max_steps: int = 40
    fail: bool = False
    bar: bool = True  # False: like the HF/TRL trainers, progress only through logged steps


class Noisy(lmforge.Sampler):
    config_class = NoisyConfig
    inputs: ClassVar[dict] = {}

    def run(self, inputs, output_dir, context):
        from tqdm.auto import tqdm

        warnings.warn("this argument is deprecated", FutureWarning)
        logging.getLogger("transformers.trainer").warning("a library warning")
        bar = tqdm(total=self.config.max_steps, desc="training", disable=not self.config.bar)
        for step in range(1, self.config.max_steps + 1):
            bar.update(1)
            if step % 10 == 0:
                tqdm.write(str({"loss": f"{5 - step / 10:.3f}", "grad_norm": "0.5"}))
                context.log_metrics({"loss": 5 - step / 10}, step=step)
            if self.config.fail and step == 20:
                raise lmforge.DataError("noisy: bad data at step 20")
        bar.close()
        shards = tqdm(total=1, desc="Writing model shards")
        shards.update(1)
        shards.close()
        context.log_metrics({"train_loss": 4.0}, step=self.config.max_steps)
        return output_dir


@pytest.fixture(scope="module", autouse=True)
def noisy_plugin():
    with lmforge.registered("sampler", "noisy_test", Noisy):
        yield


def _cfg(root: Path, name: str, quiet: bool = False, fail: bool = False) -> dict:
    return {"run": {"root": str(root), "name": name, "quiet": quiet, "report": False},
            "hardware": {"device": "cpu"}, "pipeline": {"stages": {"noisy": {}, "again": {}}},
            "noisy": {"kind": "sampler", "plugin": "noisy_test", "fail": fail},
            "again": {"kind": "sampler", "plugin": "noisy_test", "max_steps": 8}}


def test_plain_lines_where_stderr_is_no_terminal(tmp_path, capfd):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        lmforge.run(_cfg(tmp_path, "plain"))
    out, err = capfd.readouterr()
    lines = (out + err).splitlines()
    assert "lmforge: noisy (noisy_test) started: 40 steps" in lines
    assert [line.split(" ")[2] for line in lines if line.startswith("lmforge: noisy ") and "%)" in line] == \
        ["20/40"]  # one line halfway, not one per step
    assert any(line.startswith("lmforge: noisy done in") and "train loss 4" in line for line in lines)
    assert len(lines) <= 10, lines
    assert "Warning" not in out + err and "{'loss'" not in out + err and "Writing model shards" not in out + err
    log = (tmp_path / "plain" / "run.log").read_text()
    assert "FutureWarning: this argument is deprecated" in log and "a library warning" in log
    assert "{'loss': '4.000'" in log and "noisy step 40: loss=1" in log


def test_quiet_prints_nothing_and_state_is_restored(tmp_path, capfd):
    import datasets
    import tqdm.auto

    original = tqdm.auto.tqdm
    handlers = list(logging.getLogger("transformers").handlers)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        lmforge.run(_cfg(tmp_path, "quiet", quiet=True))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert tqdm.auto.tqdm is original and logging.getLogger("transformers").handlers == handlers
    assert datasets.is_progress_bar_enabled()  # switched off for the run only
    assert "FutureWarning" in (tmp_path / "quiet" / "run.log").read_text()


def test_a_failing_stage_leaves_a_clean_terminal(tmp_path, capfd):
    import tqdm.auto

    original = tqdm.auto.tqdm
    with pytest.raises(lmforge.DataError, match="bad data at step 20"):
        lmforge.run(_cfg(tmp_path, "fails", fail=True))
    assert tqdm.auto.tqdm is original and not logging.getLogger("py.warnings").handlers
    assert "Warning" not in "".join(capfd.readouterr())


def test_live_display_on_a_terminal(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "140")
    lmforge.run(_cfg(tmp_path, "live"))
    _, err = capfd.readouterr()
    final = err.split("\x1b[2K")[-1] if "\x1b[2K" in err else err
    assert "noisy" in err and "40/40" in err and "✓" in err and "again" in err
    assert "started" not in final and "Warning" not in err and "{'loss'" not in err


@pytest.mark.slow
def test_default_pipeline_prints_under_30_lines_without_warnings(tmp_path):
    """The default pipeline (steps cut down to keep this test short), piped as CI or `| tee` would see it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    args = [sys.executable, "-c", "from lmforge.cli import main; main()", "run", f"run.root={tmp_path}",
            "pretrainer.max_steps=20", "finetuner.max_steps=4", "reward_model.max_steps=4", "aligner.max_steps=4",
            "preferences.samples=2", "sampler.max_prompts=2"]
    result = subprocess.run(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=600, check=False)
    output = result.stdout
    assert result.returncode == 0, output[-2000:]
    lines = output.splitlines()
    assert len(lines) <= 30, output
    assert "Warning" not in output and "{'" not in output and "it/s]" not in output, output
    assert lines[-1].startswith("lmforge: run complete:")
    assert lines[-2] == "lmforge: talk to it: lmforge chat default/aligner", output  # relative to the cwd
    assert lines[-3] == "lmforge: report: default/report.html", output
    assert any(line.startswith("lmforge: aligner on ") and " right, " in line for line in lines[-6:-3]), output


def test_the_closing_line_fits_an_80_column_terminal(tmp_path):
    """In a terminal (a real pseudo-terminal, 80 columns) `run complete` folds under its prefix, as the other
    closing lines do; piped it stays one line (the test above)."""
    master, slave = pty.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "80", "LINES": "40", "TERM": "xterm"}
    args = [sys.executable, "-c", "from lmforge.cli import main; main()", "run", f"run.root={tmp_path}",
            "pipeline=clean_only"]
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait(timeout=300) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    lines = [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]
    start = next(i for i, line in enumerate(lines) if line.startswith("lmforge: run complete:"))
    closing = [line for line in lines[start:] if line.strip()]
    assert len(closing) >= 2 and all(len(line) <= 80 for line in closing), closing
    assert all(line.startswith(" " * 9) for line in closing[1:]), closing
    assert "skipped as complete: none)" in " ".join(part.strip() for part in closing)


def test_a_stage_without_a_bar_moves_by_its_logged_steps(tmp_path, capfd):
    cfg = _cfg(tmp_path, "barless")
    cfg["noisy"]["bar"] = False
    lmforge.run(cfg)
    lines = "".join(capfd.readouterr()).splitlines()
    progress = [line for line in lines if line.startswith("lmforge: noisy ") and "%)" in line]
    assert [line.split(" ")[2] for line in progress] == ["20/40"]
    assert all("/s" in line and "left" in line for line in progress)
