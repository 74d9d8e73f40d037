"""Core spine checks that need no training: registry, config validation, errors."""

from __future__ import annotations

import lmforge
import pytest


def test_import_is_torch_free():
    import subprocess
    import sys

    code = "import sys, lmforge; lmforge.registry(); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_builtins_registered_through_entry_points():
    reg = lmforge.registry()
    for kind in lmforge.STAGE_KINDS:
        assert reg.names(kind), kind
        for name in reg.names(kind):
            assert reg.entry(kind, name).origin.startswith("lmforge ")


def test_unknown_plugin_lists_available_and_close_match():
    with pytest.raises(lmforge.PluginNotFound) as info:
        lmforge.registry().get("aligner", "dop")
    message = str(info.value)
    assert "\n" not in message and "did you mean 'dpo'" in message and "orpo" in message


def test_misspelt_key_is_an_error_naming_key_and_allowed():
    cfg = lmforge.compose(["aligner.bta=0.2"])
    with pytest.raises(lmforge.ConfigError) as info:
        lmforge.stage("aligner", cfg)
    message = str(info.value)
    assert message.startswith("aligner.bta: unknown key") and "did you mean 'beta'" in message
    assert "\n" not in message


def test_wrong_type_is_an_error():
    cfg = lmforge.compose(["aligner.beta=abc"])
    with pytest.raises(lmforge.ConfigError, match=r"aligner\.beta"):
        lmforge.stage("aligner", cfg)


def test_override_swaps_implementation():
    from lmforge.plugins.aligners.orpo import ORPOAligner

    assert isinstance(lmforge.stage("aligner", lmforge.compose(["aligner=orpo"])), ORPOAligner)


def test_stage_classes_usable_without_hydra():
    from lmforge.plugins.aligners.dpo import DPOAligner

    aligner = DPOAligner(beta=0.3)
    assert aligner.config.beta == 0.3 and aligner.kind == "aligner"
    with pytest.raises(lmforge.ConfigError, match="bta"):
        DPOAligner(bta=0.3)


def test_stage_ref_to_unknown_stage_fails_before_running(tmp_path):
    cfg = lmforge.compose([f"run.root={tmp_path}", "pipeline.stages.tokenizer.text=stage:cleanr"])
    with pytest.raises(lmforge.ConfigError, match="did you mean 'cleaner'"):
        lmforge.run(cfg)
    assert not any(tmp_path.rglob("manifest.json"))


def test_missing_required_input(tmp_path):
    cfg = lmforge.compose([f"run.root={tmp_path}", "pipeline=sft_only"])
    with pytest.raises(lmforge.ConfigError, match=r"pipeline\.stages\.finetuner\.model"):
        lmforge.run(cfg)
