"""Hook hygiene as pytest does it: a misspelt hook fails at registration (``check_pending``), a deprecated
hook warns its implementers, replacing a built-in says so, every hookspec is typed and documents its
parameters, and only aligners that use a reward model accept one."""

from __future__ import annotations

import inspect
import warnings

import lmforge
import pluggy
import pytest
from lmforge import hookspecs


class _Misspelt:
    @lmforge.hookimpl
    def lmforge_log_metric(self, stage_name, step, metrics, context):  # no such hook: lmforge_log_metrics
        pass


class _OldStyle:
    @lmforge.hookimpl
    def lmforge_artifact_written(self, stage_name, path, manifest, context):
        pass


class _Replacer:
    @lmforge.hookimpl
    def lmforge_register(self, registry):
        registry.add("aligner", "dpo", "lmforge.plugins.aligners.orpo:ORPOAligner")
        registry.add("aligner", "my_dpo", "lmforge.plugins.aligners.dpo:DPOAligner")


def test_a_misspelt_hook_fails_at_registration_and_leaves_nothing_registered():
    plugin = _Misspelt()
    with pytest.raises(pluggy.PluginValidationError, match="lmforge_log_metric"):
        lmforge.register_plugin(plugin)
    assert not lmforge.plugin_manager().is_registered(plugin)


def test_the_deprecated_artifact_written_hook_warns_its_implementers():
    plugin = _OldStyle()
    with pytest.warns(DeprecationWarning, match="implement lmforge_stage_end"):
        lmforge.register_plugin(plugin)
    lmforge.unregister_plugin(plugin)


def test_replacing_a_builtin_warns_and_adding_a_new_name_does_not():
    plugin = _Replacer()
    lmforge.register_plugin(plugin, name="replacer")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            registry = lmforge.registry()
        messages = [str(w.message) for w in caught]
        assert [m for m in messages if "replaces lmforge's built-in" in m] == [
            "aligner 'dpo' from replacer replaces lmforge's built-in aligner 'dpo'"]
        assert registry.get("aligner", "dpo").__name__ == "ORPOAligner"
    finally:
        lmforge.unregister_plugin(plugin)
    assert lmforge.registry().get("aligner", "dpo").__name__ == "DPOAligner"


def test_every_hookspec_is_typed_and_documents_its_parameters():
    for name in (n for n in dir(hookspecs) if n.startswith("lmforge_")):
        function = getattr(hookspecs, name)
        signature = inspect.signature(function)
        assert signature.return_annotation is not inspect.Signature.empty, name
        assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values()), name
        doc = inspect.getdoc(function) or ""
        assert doc, name
        if name != "lmforge_artifact_written":  # deprecated: see lmforge_stage_end
            shared = ("stage_name", "context", "stage", "inputs")  # documented once, in the module docstring
            assert [p for p in signature.parameters if f":param {p}:" not in doc and p not in shared] == [], name
    assert all(f"``{p}``" in hookspecs.__doc__ for p in ("stage_name", "stage", "inputs", "context"))


def test_only_aligners_that_use_a_reward_model_take_one():
    takes = {name: "reward_model" in lmforge.registry().get("aligner", name).optional_inputs
             for name in lmforge.registry().names("aligner")}
    assert takes == {"dpo": False, "grpo": True, "kto": False, "orpo": False, "ppo": True, "reward_model": False,
                     "rloo": True}
    from lmforge.plugins.aligners.dpo import DPOAligner

    with pytest.raises(lmforge.ConfigError, match=r"aligner: unknown input 'reward_model'"):
        DPOAligner().check_inputs({"model": ".", "data": ".", "reward_model": "."})


def test_hf_trainer_arguments_live_in_the_plugins_not_the_core():
    assert not hasattr(lmforge.Hardware, "trainer_kwargs")
    from lmforge.plugins.lib.training import hardware_arguments

    assert hardware_arguments(lmforge.Hardware(device="cpu")) == {"use_cpu": True, "bf16": False, "fp16": False,
                                                                   "torch_compile": False}
