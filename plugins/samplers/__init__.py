"""Sampler plugins: generate text from a model."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("sampler", "hf_generate", "lmforge.plugins.samplers.hf_generate:HFGenerateSampler")
