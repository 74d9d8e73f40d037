"""Aligner plugins: preference optimisation and RL against rewards."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("aligner", "dpo", "lmforge.plugins.aligners.dpo:DPOAligner")
    registry.add("aligner", "orpo", "lmforge.plugins.aligners.orpo:ORPOAligner")
