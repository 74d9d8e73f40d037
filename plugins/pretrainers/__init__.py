"""Pretrainer plugins: causal language models trained from scratch."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("pretrainer", "hf_trainer", "lmforge.plugins.pretrainers.hf_trainer:HFTrainerPretrainer")
