"""The live display as a person at a terminal sees it: the default pipeline's stages at 80, 100 and 160 columns
(rich rendering at a fixed width, and a real run in a pseudo-terminal under ``script``), the order in which
columns go when narrower, the closing lines of a run, ``lmforge --help`` and a plugin command's library output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import lmforge
import pytest
from lmforge.plugins.console import DROP_ORDER, RunConsole, StageTable, closing_lines, plan_columns

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def default_stages() -> list[str]:
    return list(lmforge.compose([])["pipeline"]["stages"])


def rendered(lines: dict, width: int) -> list[str]:
    from rich.console import Console

    with open(os.devnull, "w") as sink:
        console = Console(width=width, force_terminal=True, record=True, file=sink)
        console.print(StageTable(lines))
    return console.export_text().splitlines()


@pytest.fixture
def default_run_display(tmp_path) -> dict:
    """The default pipeline's console state part way through: every stage done but the aligner, which is at
    step 37 of 100 with a loss and a reward accuracy; the stages driven through the console's own methods."""
    stages = default_stages()
    console = RunConsole(tmp_path, quiet=True, stages=stages)
    console.start()
    try:
        summaries = {"cleaner": {"docs_out": 462}, "tokenizer": {"vocab_size": 2048},
                     "pretrainer": {"train_loss": 6.81, "eval_loss": 6.439, "perplexity": 625.5},
                     "finetuner": {"train_loss": 5.476, "eval_loss": 4.217, "eval_loss_start": 5.9},
                     "preferences": {"pairs": 96}, "reward_model": {"train_loss": 0.61}}
        for name in stages[:stages.index("aligner")]:
            total = 1000 if name == "pretrainer" else 60 if name in ("finetuner", "reward_model") else None
            console.stage_start(name, name + "_plugin", total)
            for step in range(10, (total or 0) + 1, 10):
                console.metrics(name, step, {"loss": 6.0 - step / 1000})
            console.stage_end(name, 83.2, tmp_path / name, summaries.get(name, {}))
        console.stage_start("aligner", "dpo", 100)
        console.metrics("aligner", 10, {"loss": 0.69, "rewards/accuracies": 0.5})
        console.metrics("aligner", 37, {"loss": 0.6512, "rewards/accuracies": 0.625, "rewards/margins": 0.31})
    finally:
        console.stop()
    return console.lines


@pytest.mark.parametrize("width", [80, 100, 160])
def test_default_run_display_keeps_every_name_and_progress(default_run_display, width):
    lines = rendered(default_run_display, width)
    assert all(len(line.rstrip()) <= width for line in lines), lines
    by_stage = {}
    for name in default_run_display:
        starting = [line for line in lines if line.startswith(name + " ")]
        assert len(starting) == 1, (name, lines)  # the full name, never cut
        by_stage[name] = starting[0]
    for name in ("pretrainer", "finetuner", "reward_model"):  # the count and the time it took, on the row
        assert re.search(r"(\d+)/\1 +✓ 1:23", by_stage[name]), by_stage[name]
    for name in ("cleaner", "tokenizer", "preferences"):
        assert "━" in by_stage[name] and "✓ 1:23" in by_stage[name], by_stage[name]
    running = by_stage["aligner"]  # bar, step count, rate and time left
    assert "━" in running and "37/100" in running and re.search(r"[\d.]+k?/s", running) and " left" in running
    assert "sampler" in by_stage  # still waiting: its row is there from the start
    text = "\n".join(lines)
    assert "loss 0.6512" in text and "acc 0.625" in text and "train loss 6.81" in text and "docs kept 462" in text
    if width >= 100:  # metrics beside the bar
        assert "loss 0.6512" in running and "docs kept 462" in by_stage["cleaner"]
    else:  # metrics on a row of their own, under the bar
        assert len(lines) <= 2 * len(by_stage) and "loss 0.6512" not in running


def test_narrower_than_80_drops_columns_in_the_stated_order_and_never_the_name(default_run_display):
    assert DROP_ORDER == ("rate", "bar", "eta", "count")
    seen = []
    for width in range(79, 11, -1):
        columns = plan_columns(width, 12, 9)
        kept = [c for c in ("rate", "eta", "count") if c in columns.shown] + (["bar"] if columns.bar else [])
        gone = tuple(c for c in DROP_ORDER if c not in kept)
        if gone not in seen:
            seen.append(gone)
        lines = rendered(default_run_display, width)
        for name in default_run_display:
            assert any(line.startswith(name) for line in lines), (width, name, lines)
    assert seen == [DROP_ORDER[:n] for n in range(len(DROP_ORDER) + 1)]


@dataclass
class StepsConfig:
    max_steps: int = 30


class Steps(lmforge.Sampler):
    """A stage with a tqdm bar that takes a moment per step, like a trainer."""

    config_class = StepsConfig
    inputs: ClassVar[dict] = {}

    def run(self, inputs, output_dir, context):
        import time

        from tqdm.auto import tqdm

        for step in tqdm(range(1, self.config.max_steps + 1), total=self.config.max_steps):
            time.sleep(0.02)
            if step % 10 == 0:
                context.log_metrics({"loss": 3.0 - step / 100, "rewards/accuracies": 0.5}, step=step)
        return output_dir


@dataclass
class AnsweringConfig:
    max_steps: int = 5


class AnsweringFinetuner(lmforge.Finetuner):
    """Stands for a fine-tuner: writes a causal LM's config.json and logs the answers evaluator's numbers."""

    config_class = AnsweringConfig
    inputs: ClassVar[dict] = {}

    def run(self, inputs, output_dir, context):
        (Path(output_dir) / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
        context.log_metrics({"eval/answers/correct": 0.5, "eval/answers/not_sure": 0.25,
                             "eval/answers/ends_turn": 0.75, "eval/answers/prompts": 8})
        return output_dir


@pytest.fixture(scope="module", autouse=True)
def test_plugins():
    with lmforge.registered("sampler", "steps_test", Steps), \
            lmforge.registered("finetuner", "answering_test", AnsweringFinetuner):
        yield


PIPELINE = {"cleaner": {}, "tokenizer": {}, "pretrainer": {}, "finetuner": {}, "preferences": {},
            "reward_model": {}, "aligner": {}, "sampler": {}}  # the default pipeline's stage names


def _cfg(root, name, report=False):
    cfg = {"run": {"root": str(root), "name": name, "report": report}, "hardware": {"device": "cpu"},
           "pipeline": {"stages": PIPELINE}}
    for stage in PIPELINE:
        cfg[stage] = {"kind": "sampler", "plugin": "steps_test", "max_steps": 30}
    cfg["aligner"] = {"kind": "finetuner", "plugin": "answering_test"}
    return cfg


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a pseudo-terminal")
@pytest.mark.parametrize("width", [80, pytest.param(100, marks=pytest.mark.slow),
                                   pytest.param(160, marks=pytest.mark.slow)])
def test_a_run_in_a_pseudo_terminal(tmp_path, width):
    """A real run drawn by rich into a pseudo-terminal of ``width`` columns: the last frame of the display
    has every stage's full name with its bar and count, and the run ends naming the chat command."""
    program = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import lmforge, test_console
        with lmforge.registered("sampler", "steps_test", test_console.Steps), \\
                lmforge.registered("finetuner", "answering_test", test_console.AnsweringFinetuner):
            lmforge.run(test_console._cfg({str(tmp_path)!r}, "tty"))
        """)
    (tmp_path / "program.py").write_text(program)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(width), "LINES": "24"}
    env.pop("TTY_INTERACTIVE", None)
    command = f"stty cols {width} rows 24; {sys.executable} {tmp_path / 'program.py'}"
    result = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, env=env,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    frame = ANSI.sub("", result.stdout.split("\x1b[2K")[-1])  # after the display's last redraw
    lines = [line for line in frame.splitlines() if line.strip()]
    talk = next(i for i, line in enumerate(lines) if line.startswith("lmforge: talk to it:"))
    command = " ".join(line.strip() for line in lines[talk:]).split("talk to it: ", 1)[1]
    assert command.startswith("lmforge chat ") and command.endswith("aligner"), lines[talk:]
    # every line fits, but the chat command: kept whole (to copy), on a line of its own where it is too long
    assert all(len(line) <= width for line in lines if not line.strip().startswith("lmforge chat ")), lines
    for name in PIPELINE:
        row = next((line for line in lines if line.startswith(name + " ")), None)
        assert row is not None, (name, lines)
        assert "━" in row and "✓" in row and ("30/30" in row or name == "aligner"), row
        assert row.index("━") == len(max(PIPELINE, key=len)) + 1  # the names in one column, none cut
    assert lines[talk - 2] == "lmforge: aligner on 8 held-out prompts: 50% right, 25% not sure, 25% wrong;"


def _folded(prefix: str, rest: str, width: int = 80) -> list[str]:
    """``prefix rest`` as the console prints it piped: one line where it fits, else ``rest`` whole under it."""
    line = f"{prefix} {rest}"
    return [line] if len(line) <= width else [prefix, " " * len("lmforge: ") + rest]


def test_plain_output_three_lines_a_stage_and_closing_lines(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # piped: 80 columns
    lmforge.run(_cfg(tmp_path, "plain", report=True))
    out, err = capfd.readouterr()
    lines = (out + err).splitlines()
    said = [line for line in lines if line.startswith("lmforge: ")]  # the others continue the line above
    assert not [line for line in lines if line not in said and not line.startswith(" " * len("lmforge: "))], lines
    # longer than 80: only what is never broken (a path, "-> <artifact>", the chat command) on a line of its own
    assert all(len(line) <= 80 or " " not in line.strip() or line.strip().startswith(("-> ", "lmforge chat "))
               for line in lines), lines
    for stage in PIPELINE:
        assert 1 <= sum(line.startswith(f"lmforge: {stage} ") for line in said) <= 3, lines
    assert len(said) <= 3 * len(PIPELINE) + 4, lines
    closing = [
        "lmforge: aligner on 8 held-out prompts: 50% right, 25% not sure, 25% wrong;",
        "         75% of its sampled answers end the turn",
        *_folded("lmforge: report:", str(tmp_path / "plain" / "report.html")),
        *_folded("lmforge: talk to it:", f"lmforge chat {tmp_path / 'plain' / 'aligner'}")]
    assert lines[-len(closing):] == closing, lines


@dataclass
class RLConfig:
    max_steps: int = 4


class RLLoop(lmforge.Sampler):
    """Stands for the PPO aligner: a bar per rollout step and PPO's own statistics logged every step."""

    config_class = RLConfig
    inputs: ClassVar[dict] = {}

    def run(self, inputs, output_dir, context):
        from tqdm.auto import tqdm

        bar = tqdm(total=self.config.max_steps, desc="ppo", unit="it")
        for step in range(1, self.config.max_steps + 1):
            context.log_metrics({"reward": 0.1 * step, "score": 0.2 * step, "kl": 0.0125 * step, "kl_k1": 0.01,
                                 "kl_k3": 0.01, "rlhf_reward": 0.09 * step, "loss": 0.5, "entropy": 2.0,
                                 "kl_coef": 0.05, "response_length": 12.0}, step=step)
            bar.update(1)
        bar.close()
        return output_dir


def test_an_rl_stage_s_done_line_shows_its_end_reward_and_kl(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    with lmforge.registered("sampler", "rl_test", RLLoop):
        lmforge.run({"run": {"root": str(tmp_path), "name": "rlhf", "report": False}, "hardware": {"device": "cpu"},
                     "pipeline": {"stages": {"ppo": {}}}, "ppo": {"kind": "sampler", "plugin": "rl_test"}})
    lines = "".join(capfd.readouterr()).splitlines()
    done = next(line for line in lines if line.startswith("lmforge: ppo done in"))
    assert re.fullmatch(r"lmforge: ppo done in [\d.]+s: reward 0\.4, kl 0\.05 -> .*ppo", done), done


def test_closing_lines_read_counts_where_recorded(tmp_path):
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"]}))
    manifests = {"sft": {"kind": "finetuner", "metrics": {"eval/answers/right": 5, "eval/answers/not_sure": 2,
                                                          "eval/answers/wrong": 9, "eval/answers/n": 16}},
                 "rm": {"kind": "aligner", "metrics": {}}}  # a reward model is no chat model
    assert closing_lines(tmp_path, manifests) == [
        "lmforge: sft on 16 held-out prompts: 5 right, 2 not sure, 9 wrong",
        f"lmforge: talk to it: lmforge chat {tmp_path / 'sft'}"]
    assert closing_lines(tmp_path, {"sft": {"kind": "finetuner"}}) == [
        f"lmforge: talk to it: lmforge chat {tmp_path / 'sft'}"]
    assert closing_lines(tmp_path, {"rm": manifests["rm"]}) == []


def test_help_lists_every_command_then_the_options(capsys):
    from lmforge.cli import main, plugin_commands

    main(["--help"])
    text = capsys.readouterr().out
    commands_at, options_at = text.index("commands:"), text.index("options:")
    assert commands_at < options_at
    listed = re.findall(r"^  (\S+)", text[commands_at:options_at], re.MULTILINE)
    assert listed == ["run", "plugins", *sorted(plugin_commands())]
    assert "--debug" not in text[:options_at].split("\n", 1)[1]  # only in the usage line and the options
    assert re.search(r"^  --debug ", text[options_at:], re.MULTILINE)


def test_a_plugin_command_sends_library_output_to_its_log(tmp_path, capfd, monkeypatch):
    """``lmforge tokenize`` loads a tokenizer through transformers: its warnings and bars go to the
    command's log, the terminal shows the tokens only."""
    import logging
    import warnings

    from lmforge.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LMFORGE_DEBUG", raising=False)

    def noisy(argv):
        warnings.warn("a deprecated argument", FutureWarning)
        logging.getLogger("transformers.modeling_utils").warning("some weights were not used")
        import transformers.utils.logging as transformers_logging

        for _ in transformers_logging.tqdm(range(3), desc="Loading weights"):
            pass
        print("the command's own output")
        return 0

    monkeypatch.setattr("lmforge.cli.plugin_commands", lambda: {"noisy": ("a test command", noisy)})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        main(["noisy"])
    out, err = capfd.readouterr()
    assert out == "the command's own output\n" and err == ""
    log = (tmp_path / "cache" / "lmforge" / "logs" / "noisy.log").read_text()
    assert "a deprecated argument" in log and "some weights were not used" in log
    assert not logging.getLogger("py.warnings").handlers  # restored after the command


def test_chat_prints_no_progress_bar_before_its_prompt(varied_model_dir, tmp_path):
    """``lmforge chat`` as a person starts it: the first thing on the terminal is the chat's own line and its
    prompt — no "Loading weights" bar, no warning; the library output is in the command's log."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONWARNINGS": "default"}
    env.pop("LMFORGE_DEBUG", None)
    result = subprocess.run([sys.executable, "-c", "from lmforge.cli import main; main()", "chat",
                             str(varied_model_dir), "--max-new-tokens", "2"], input="/quit\n", capture_output=True,
                            text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"chatting with {varied_model_dir}  (/help for commands)\nyou> ")
