"""The run console: bars, warnings and trainer dicts routed away from the terminal, a few plain lines per stage
where stderr is no terminal, a live display where it is one, nothing under ``run.quiet``, library state
restored afterwards. Runs go through lmforge's real pipeline with a small in-test stage that behaves like a
trainer (a tqdm bar, ``tqdm.write`` of a metrics dict, a FutureWarning, logged metrics)."""

from __future__ import annotations

import json
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
    assert len([line for line in lines if not line.startswith(" ")]) <= 30, output  # folded lines count once
    assert "Warning" not in output and "{'" not in output and "it/s]" not in output, output
    # piped: folded to 80 columns (COLUMNS unset); only a path longer than that ("-> /tmp/…/cleaner") overflows
    assert all(len(line) <= 80 or len(line.split()) <= 2 for line in lines), output
    complete = next(i for i, line in enumerate(lines) if line.startswith("lmforge: run complete:"))
    assert all(line.startswith(" ") for line in lines[complete + 1:]), output  # the last line, folded
    assert lines[complete - 1] == "lmforge: talk to it: lmforge chat default/aligner", output  # relative to the cwd
    assert lines[complete - 2] == "lmforge: report: default/report.html", output
    assert any(line.startswith("lmforge: aligner on ") and " right, " in line
               for line in lines[complete - 6:complete - 2]), output


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


@dataclass
class CheckedConfig:
    data: str = ""
    max_steps: int = 4


class Checked(lmforge.Sampler):
    """Reads the user's chats while the run is planned (``check_data``, as the fine-tuner does) through lmforge's
    own loader, which warns about unfilled placeholders; a library warns then too."""

    config_class = CheckedConfig
    inputs: ClassVar[dict] = {}

    def check_data(self, inputs):
        from lmforge.plugins.lib.formats.loaders import load_conversations

        warnings.warn("a library's planning-time notice", UserWarning)  # not lmforge's: run.log only
        load_conversations(self.config.data)

    def run(self, inputs, output_dir, context):
        return output_dir


@pytest.mark.parametrize("quiet", [False, True])
def test_warnings_raised_while_planning_reach_the_log_and_lmforge_s_as_one_line(tmp_path, capfd, monkeypatch,
                                                                                 quiet):
    monkeypatch.setenv("COLUMNS", "1000")  # the warning's line unfolded, whatever tmp_path's length
    data = tmp_path / "sft.jsonl"
    chat = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "{{name}}, by {{author}}."}]
    data.write_text("".join(json.dumps({"messages": chat}) + "\n" for _ in range(3)))
    cfg = {"run": {"root": str(tmp_path), "name": "planned", "quiet": quiet, "report": False},
           "hardware": {"device": "cpu"}, "pipeline": {"stages": {"checked": {}}},
           "checked": {"kind": "sampler", "plugin": "checked_test", "data": str(data)}}
    with lmforge.registered("sampler", "checked_test", Checked), warnings.catch_warnings():
        warnings.simplefilter("always")
        lmforge.run(cfg)
    out, err = capfd.readouterr()
    if quiet:
        assert out == "" and err == ""
    else:
        said = [line for line in (out + err).splitlines() if "placeholders" in line or "Warning" in line]
        expected = (f"lmforge: warning: {data}: unfilled placeholders {{{{author}}}} (3x), {{{{name}}}} (3x); "
                    "set placeholders.<name> to fill them")
        assert said == [expected], out + err
    assert "Warning" not in out + err and "planning-time notice" not in out + err
    log = (tmp_path / "planned" / "run.log").read_text()
    assert "UserWarning: a library's planning-time notice" in log and f"UserWarning: {data}: unfilled" in log


def test_plain_lines_fold_to_the_terminal_width(tmp_path, capfd, monkeypatch):
    """Piped, with COLUMNS=60: every line fits, continuation lines go under the text after "lmforge: ", and
    no path or number is cut (the artifact's path and its arrow stay on one line)."""
    monkeypatch.setenv("COLUMNS", "60")
    lmforge.run(_cfg(tmp_path, "a_rather_long_run_name_that_makes_the_done_line_long"))
    out, err = capfd.readouterr()
    lines = (out + err).splitlines()
    assert all(len(line) <= 60 for line in lines if not line.lstrip().startswith("-> ")), lines
    artifact = tmp_path / "a_rather_long_run_name_that_makes_the_done_line_long" / "noisy"
    done = next(i for i, line in enumerate(lines) if line.startswith("lmforge: noisy done in"))
    assert lines[done + 1] == f"         -> {artifact}", lines
    assert all(line.startswith(("lmforge: ", " " * 9)) for line in lines), lines
    joined = " ".join(line.strip() for line in lines)
    assert "train loss 4" in joined and f"-> {artifact}" in joined


def test_rate_after_a_resume_counts_only_the_steps_done_now(tmp_path, capfd, monkeypatch):
    """A trainer resumed at step 1600 of 2000 (progress by logged steps, as the HF/TRL trainers; the console
    reads the step from the stage's newest checkpoint): its rate counts the 20 steps done since, not the 1600
    before, which were another process's. A fresh stage's first log has its rate at once (its halfway line
    too). The clock is the console's, set by the test."""
    import lmforge.plugins.console as console_module

    clock = [1000.0]
    monkeypatch.setattr(console_module.time, "time", lambda: clock[0])
    console = console_module.RunConsole(tmp_path, quiet=False, stages=["pretrainer", "finetuner"])
    console.start()
    try:
        console.stage_start("pretrainer", "hf_trainer", 2000, resumes_at=1600)
        clock[0] += 8.0  # 20 steps at 2.5 steps/s
        console.metrics("pretrainer", 1620, {"loss": 3.1})
        console.stage_start("finetuner", "sft", 20)
        clock[0] += 4.0
        console.metrics("finetuner", 10, {"loss": 1.5})
    finally:
        console.stop()
    lines = "".join(capfd.readouterr()).splitlines()
    assert [line for line in lines if "%)" in line] == \
        ["lmforge: pretrainer 1620/2000 steps (81%) 2.5/s, 2:32 left  loss 3.1",
         "lmforge: finetuner 10/20 steps (50%) 2.5/s, 0:04 left  loss 1.5"], lines


def test_a_bar_opened_at_a_resumed_step_rates_its_own_steps(tmp_path):
    """A loop resumed at step 80 opens its bar with ``initial=80`` (PPO, the lean pretrainer): before tqdm has
    a smoothed rate, the line's rate is the steps moved since the bar opened over the time since then."""
    from lmforge.plugins.console import RunConsole

    console = RunConsole(tmp_path, quiet=True, stages=["aligner"])
    console.start()
    try:
        import tqdm.auto

        console.stage_start("aligner", "ppo", 100)
        bar = tqdm.auto.tqdm(total=100, initial=80, desc="ppo", mininterval=1e9)  # no smoothed rate
        bar.start_t -= 10.0  # opened ten seconds ago
        bar.update(1)
        rate = console.lines["aligner"].rate
        bar.close()
    finally:
        console.stop()
    assert console.lines["aligner"].n == 81
    assert rate == pytest.approx(0.1, rel=0.05)  # one step in ten seconds, not 81
