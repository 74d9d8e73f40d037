"""Every ``lmforge …`` command written in README.md and docs/ works, checked from a directory outside the repo.

Commands are taken from shell code blocks (``lmforge …`` / ``$ lmforge …`` lines) and inline code spans.
``lmforge run …`` is composed in this process exactly as the CLI composes it (its own argument splitting,
``-c`` files included: a ```yaml block whose first line is ``# NAME.yaml`` is written to the temp directory
as NAME.yaml), then every stage of the pipeline is built and its parameters validated, ``stage:`` references
checked, and every input path the docs did not type themselves (i.e. one that comes from lmforge's own
defaults) must exist. Other subcommands are parsed by their real argument parser and stopped right there.
A documented command that stops working fails here, with the file and line to fix.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
from pathlib import Path

import lmforge
import pytest
from lmforge.cli import main, plugin_commands, split_run_args

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
PLACEHOLDER = re.compile(r"<[A-Za-z_][^<>]*>|…|\.\.\.|\bRUN_[AB]\b")  # `lmforge <command> …`: a template, not a command

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?(@\S+)?$")  # org/name[:subset][@revision], not a local path
FILE_SUFFIXES = (".txt", ".md", ".json", ".jsonl", ".parquet", ".csv", ".gz", ".yaml")
INLINE = "(inline)"  # an inline code span: prose may name a command without its required arguments

# Commands that show a shape rather than something to run here; each names why.
ILLUSTRATIVE = {
    "hydra.searchpath=[file:///abs/my_conf]": "a directory of the reader's own options",
}


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def extract(files=DOC_FILES):
    """(where, command text, expected error or None) for each documented command, plus {file name: text} of
    the named YAML blocks. A ``$ lmforge …`` line followed by ``lmforge: error: …`` documents a failure: the
    command must fail with that message (up to its first ``…``)."""
    commands, yaml_files = [], {}
    for path in files:
        lines = path.read_text().splitlines()
        fence, lang, pending = None, "", ""
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                if fence is None:
                    fence, lang = stripped[:3], stripped[3:].strip().lower()
                    if lang == "yaml" and number < len(lines):
                        named = re.match(r"#\s*([\w.-]+\.ya?ml)\b", lines[number].strip())
                        if named:
                            end = next(i for i in range(number, len(lines)) if lines[i].strip().startswith("```"))
                            yaml_files[named.group(1)] = "\n".join(lines[number:end]) + "\n"
                else:
                    fence = None
                continue
            if fence is not None:
                if lang not in SHELL_LANGS:
                    continue
                text = pending + stripped.removeprefix("$ ")
                if text.endswith("\\"):
                    pending = text[:-1] + " "
                    continue
                pending = ""
                if text.startswith("lmforge "):
                    following = lines[number].strip() if number < len(lines) else ""
                    expected = following.removeprefix("lmforge: error:").split("…")[0].strip() \
                        if following.startswith("lmforge: error:") else None
                    commands.append((f"{_relative(path)}:{number}", _strip_comment(text), expected))
            else:
                for span in re.findall(r"`(lmforge [^`]+)`", line):
                    commands.append((f"{_relative(path)}:{number}", span.strip(), INLINE))
    return commands, yaml_files


def _strip_comment(text: str) -> str:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
    lexer.whitespace_split, lexer.commenters = True, "#"
    return shlex.join(list(lexer))


COMMANDS, YAML_FILES = extract()


def _swept(overrides: list[str]) -> list[list[str]]:
    """A sweep's jobs, one value of each swept key at a time (``a=1,2 b=x,y`` -> 4 jobs)."""
    choices = []
    for item in overrides:
        key, _, value = item.partition("=")
        values = value.split(",") if "," in value and not value.startswith(("[", "{", "'", '"')) else [value]
        choices.append([f"{key}={v}" for v in values])
    return [list(job) for job in itertools.product(*choices)]


def check_run(args: list[str], typed: str) -> None:
    """Compose and validate as ``lmforge run`` would; ``typed`` is what the docs wrote (command and -c file)."""
    flags, overrides, config_file = split_run_args(args)
    if config_file and Path(config_file).is_file():
        typed += "\n" + Path(config_file).read_text()
    jobs = _swept(overrides) if ("-m" in flags or "--multirun" in flags) else [overrides]
    for job in jobs:
        cfg = lmforge.resolve_config(lmforge.compose(job, config_file=config_file))
        stages = (cfg.get("pipeline") or {}).get("stages") or {}
        assert stages, "the composed pipeline has no stages"
        earlier: list[str] = []
        for name, wiring in stages.items():
            stage = lmforge.stage(name, cfg)  # plugin exists, parameters valid
            for key, value in (wiring or {}).items():
                if isinstance(value, str) and value.startswith("stage:"):
                    assert value[6:].split("/")[0] in earlier, f"pipeline.stages.{name}.{key}: {value} is not earlier"
                elif (isinstance(value, str) and value and value not in typed and "://" not in value
                      and not (HUB_ID.match(value) and Path(value).suffix not in FILE_SUFFIXES)):
                    # (Hub ids are resolved against a Hub cache at run time, not checked here)
                    assert Path(value).exists() or any(ch in value for ch in "*?["), \
                        f"pipeline.stages.{name}.{key}: {value} (from lmforge's defaults) does not exist"
            missing = [k for k in stage.inputs if (wiring or {}).get(k) in (None, "")]
            assert not missing, f"pipeline.stages.{name}: required inputs not set: {missing}"
            earlier.append(name)


class _Parsed(Exception):
    pass


def check_subcommand(name: str, args: list[str], monkeypatch) -> None:
    """The command exists and its real argument parser accepts the documented arguments (nothing runs)."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    commands = plugin_commands()
    assert name in commands, f"no such command: lmforge {name}"
    with pytest.raises(_Parsed):
        commands[name][1](args)


@pytest.fixture(scope="module")
def example_plugin():
    """The docs' example third-party plugin, registered as if ``pip install ./examples/lmforge-shouting``."""
    import sys

    sys.path.insert(0, str(ROOT / "examples" / "lmforge-shouting"))
    import lmforge_shouting

    lmforge.register_plugin(lmforge_shouting)
    yield
    lmforge.unregister_plugin(lmforge_shouting)
    sys.path.remove(str(ROOT / "examples" / "lmforge-shouting"))


def _check(command: str, monkeypatch) -> None:
    words = shlex.split(command)[1:]
    ends = [i for i, word in enumerate(words) if word in ("|", "||", "&&", ";", ">", ">>", "2>&1")]
    words = words[:ends[0]] if ends else words  # `lmforge run | tee log`: the lmforge part
    if not words or words[0] in ("-h", "--help", "help", "plugins"):
        main(words)
    elif words[0] == "run":
        check_run(words[1:], command)
    else:
        check_subcommand(words[0], words[1:], monkeypatch)


@pytest.mark.parametrize("where, command, expected", COMMANDS, ids=[f"{w} {c[:60]}" for w, c, _ in COMMANDS])
def test_documented_command_works_outside_the_repo(where, command, expected, example_plugin, tmp_path, monkeypatch,
                                                   capsys):
    inline = expected == INLINE
    expected = None if inline else expected
    if expected is None and PLACEHOLDER.search(command):
        pytest.skip("a template, not a command")
    reason = next((why for marker, why in ILLUSTRATIVE.items() if marker in command), None)
    if reason:
        pytest.skip(f"illustrative: {reason}")
    monkeypatch.chdir(tmp_path)
    for name, text in YAML_FILES.items():
        (tmp_path / name).write_text(text)
    if expected is not None:  # a documented error: it must still happen, with the documented message
        with pytest.raises((lmforge.LmforgeError, SystemExit)) as failure:
            _check(command, monkeypatch)
        message = str(failure.value) if failure.type is not SystemExit else capsys.readouterr().err
        assert expected in message, f"{where}: `{command}` fails with {message!r}, the docs say {expected!r}"
        return
    try:
        _check(command, monkeypatch)
    except (AssertionError, lmforge.LmforgeError) as exc:
        produced = [w.partition("=")[2] for w in shlex.split(command) if w.partition("=")[2].startswith("runs/")]
        if isinstance(exc, lmforge.LmforgeError) and any(p in str(exc) for p in produced):
            pytest.skip(f"needs {', '.join(produced)}, the output of an earlier documented run")
        pytest.fail(f"{where}: `{command}` -> {exc}", pytrace=False)
    except SystemExit as exc:
        err = capsys.readouterr().err
        if inline and "the following arguments are required" in err:
            return  # prose naming a command (`lmforge export`): it exists, its parser ran
        if exc.code not in (0, None):
            pytest.fail(f"{where}: `{command}` exits {exc.code}: {err.strip()[-300:]}",
                        pytrace=False)


def test_the_extraction_finds_the_commands_it_should(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("Run `lmforge run aligner=orpo` now.\n\n```bash\n$ lmforge run a=1 \\\n    b=2   # comment\n"
                   "pip install x\n```\n\n```yaml\n# mine.yaml\nrun: {name: x}\n```\n\n```text\nlmforge run no\n```\n")
    commands, yaml_files = extract([doc])
    assert [(c, e) for _, c, e in commands] == [("lmforge run aligner=orpo", INLINE), ("lmforge run a=1 b=2", None)]
    assert yaml_files == {"mine.yaml": "# mine.yaml\nrun: {name: x}\n"}
    assert len(COMMANDS) > 40  # README and docs/ together document many commands


def test_the_check_catches_a_broken_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(lmforge.LmforgeError, match="pretrainer.max_step"):
        check_run(["pretrainer.max_step=3"], "lmforge run pretrainer.max_step=3")
    with pytest.raises(AssertionError, match="does not exist"):
        check_run(["data.raw_text=nowhere.jsonl"], "lmforge run")  # a default-looking path that is missing
    with pytest.raises(AssertionError, match="no such command"):
        check_subcommand("nonsense", [], monkeypatch)
    with pytest.raises(SystemExit):
        check_subcommand("compare", ["--no-such-flag"], monkeypatch)
