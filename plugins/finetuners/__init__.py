"""Finetuner plugins: supervised fine-tuning on conversations."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("finetuner", "sft", "lmforge.plugins.finetuners.sft:SFTFinetuner")
