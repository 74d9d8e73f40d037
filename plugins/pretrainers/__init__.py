"""Pretrainer plugins: causal language models trained from scratch."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("pretrainer", "hf_trainer", "lmforge.plugins.pretrainers.hf_trainer:HFTrainerPretrainer")
    registry.add("pretrainer", "lean", "lmforge.plugins.pretrainers.lean_loop:LeanPretrainer")
