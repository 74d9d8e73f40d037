"""``lmforge run``'s arguments: Hydra flags in any order with a config-shipping plugin installed, ``--help``
listing plugins' options, and ``-c my.yaml`` (a user's own config file that replaces the default pipeline)."""

from __future__ import annotations

import sys
from pathlib import Path

import lmforge
import pytest
import yaml
from lmforge.cli import main, split_run_args

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lmforge-shouting"


@pytest.fixture
def shouting_plugin(monkeypatch):
    """The example third-party plugin (it ships conf/cleaner/shouting.yaml), registered as if pip-installed."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import lmforge_shouting

    lmforge.register_plugin(lmforge_shouting)
    yield lmforge_shouting
    lmforge.unregister_plugin(lmforge_shouting)


def _job_config(capsys, *args) -> dict:
    main(["run", *args])
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("order", ["flag_first", "flag_last", "flag_between"])
def test_cfg_job_in_any_order_with_a_plugin_that_ships_configs(shouting_plugin, capsys, order):
    overrides = ["aligner=orpo", "cleaner=shouting"]
    args = {"flag_first": ["--cfg", "job", *overrides], "flag_last": [*overrides, "--cfg", "job"],
            "flag_between": [overrides[0], "--cfg", "job", overrides[1]]}[order]
    cfg = _job_config(capsys, *args)
    assert cfg["aligner"]["plugin"] == "orpo"
    assert {"name": "shout", "min_chars": 1} in cfg["cleaner"]["steps"]  # the plugin's own option file


def test_help_lists_options_a_plugin_ships(shouting_plugin, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    cleaner_line = next(line for line in out.splitlines() if line.startswith("cleaner:"))
    assert "shouting" in cleaner_line and "standard" in cleaner_line


def test_sweep_flag_after_overrides_with_a_plugin_installed(shouting_plugin, tmp_path, capsys):
    main(["run", "pipeline=clean_only", f"run.root={tmp_path}", "run.report=false", "run.seed=1,2", "-m"])
    assert sorted(p.name for p in (tmp_path / "default").iterdir() if not p.name.startswith(".")) == \
        ["run.seed=1", "run.seed=2"]
    assert lmforge.is_complete(tmp_path / "default" / "run.seed=2" / "cleaner")


def test_split_run_args_keeps_hydra_short_cfg_and_takes_a_config_file():
    assert split_run_args(["a=1", "-c", "job"]) == (["-c", "job"], ["a=1"], None)
    assert split_run_args(["-c", "my.yaml", "a=1", "-m"]) == (["-m"], ["a=1"], "my.yaml")
    assert split_run_args(["--config=my.yaml", "--info", "defaults", "b=2"]) == (["--info", "defaults"], ["b=2"],
                                                                                  "my.yaml")


MY_CONFIG = """\
# my experiment: fine-tune an existing model, then align it with ORPO
defaults:
  - aligner: orpo
run:
  name: my_exp
finetuner:
  max_steps: 5
pipeline:
  stages:
    finetuner: {model: path/to/model, data: "${data.sft}"}
    aligner:   {model: "stage:finetuner", data: "${data.preferences}"}
"""


def test_config_file_replaces_the_default_pipeline(tmp_path, capsys):
    path = tmp_path / "my.yaml"
    path.write_text(MY_CONFIG)
    cfg = _job_config(capsys, "-c", str(path), "finetuner.batch_size=2", "--cfg", "job")
    assert list(cfg["pipeline"]["stages"]) == ["finetuner", "aligner"]  # not merged into the six-stage default
    assert cfg["aligner"]["plugin"] == "orpo" and cfg["run"]["name"] == "my_exp"
    assert cfg["finetuner"]["max_steps"] == 5 and cfg["finetuner"]["batch_size"] == 2  # file, then command line
    composed = lmforge.resolve_config(lmforge.compose(["finetuner.batch_size=2"], config_file=path))
    assert composed["pipeline"]["stages"]["aligner"]["model"] == "stage:finetuner"
    # a pipeline without the default's `preferences` stage aligns on the bundled pairs
    assert composed["pipeline"]["stages"]["aligner"]["data"] == lmforge.sample_data_path("preferences.jsonl")
    assert composed["finetuner"]["batch_size"] == 2 and composed["aligner"]["plugin"] == "orpo"


def test_config_file_that_selects_a_pipeline_edits_it(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("defaults:\n  - pipeline: sft_only\npipeline:\n  stages:\n    finetuner: {model: some/dir}\n")
    cfg = lmforge.resolve_config(lmforge.compose([], config_file=path))
    assert list(cfg["pipeline"]["stages"]) == ["finetuner"]
    assert cfg["pipeline"]["stages"]["finetuner"]["model"] == "some/dir"
    assert cfg["pipeline"]["stages"]["finetuner"]["data"].endswith("sft.jsonl")  # kept from sft_only


def test_command_line_pipeline_wins_over_the_file(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(MY_CONFIG)
    cfg = lmforge.resolve_config(lmforge.compose(["pipeline=clean_only"], config_file=path))
    assert list(cfg["pipeline"]["stages"]) == ["cleaner"]


@pytest.mark.parametrize("text, expected", [
    ("run:\n  name: [unclosed\n", "my.yaml:3: not valid YAML"),
    ("- just\n- a list\n", "my.yaml: expected a mapping"),
    ("defaults: aligner\n", "my.yaml: defaults: expected a list"),
])
def test_bad_config_file_is_one_line_naming_the_file(tmp_path, capsys, text, expected):
    path = tmp_path / "my.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-c", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_missing_config_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", "-c", str(tmp_path / "nope.yaml")])
    assert "nope.yaml: no such file" in capsys.readouterr().err


def test_core_import_stays_torch_free():
    import subprocess

    code = "import lmforge, lmforge.cli, sys; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_plugin_override_keeps_shared_settings_and_drops_the_other_plugins_defaults():
    """`sampler.plugin=echo` (a plugin with no option file) runs with the settings it shares with the option
    file it replaces; that file's keys it does not take are not errors, a key the user set still is."""
    from dataclasses import dataclass

    @dataclass
    class EchoConfig:
        suffix: str = "!"
        max_new_tokens: int = 8

    class Echo(lmforge.Sampler):
        config_class = EchoConfig

        def run(self, inputs, output_dir, context):
            return output_dir

    base = ["pipeline=sample_only", "pipeline.stages.sampler.model=somewhere", "sampler.plugin=echo"]
    with lmforge.registered("sampler", "echo", Echo):
        stage = lmforge.stage("sampler", lmforge.compose(base))
        assert stage.config == EchoConfig(suffix="!", max_new_tokens=48)  # hf_generate.yaml's 48 is kept
        with pytest.raises(lmforge.ConfigError, match=r"sampler.top_k: unknown key for sampler 'echo'"):
            lmforge.stage("sampler", lmforge.compose([*base, "sampler.top_k=7"]))  # the user's own value
    # a plugin with an option file of its own drops nothing, even a key another option file sets to that value
    with pytest.raises(lmforge.ConfigError, match=r"aligner.beta: unknown key for aligner 'ppo'"):
        lmforge.stage("aligner", lmforge.compose(["aligner=ppo", "aligner.beta=0.1"]))


def test_a_run_stopped_by_a_bad_key_leaves_no_directory(tmp_path, capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as stopped:
        main(["run", "finetuner.max_stpes=3", f"run.root={root}", "run.name=bad"])
    assert stopped.value.code == 2 and "did you mean 'max_steps'" in capsys.readouterr().err
    assert not root.exists()  # neither the run's directory (Hydra's .hydra, error.log) nor the root it made
