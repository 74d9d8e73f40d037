"""Sampler plugins: generate text from a model (batch sampling, vLLM), and the ``chat`` command (``serve`` is
plugins/serve/)."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("sampler", "hf_generate", "lmforge.plugins.samplers.hf_generate:HFGenerateSampler")
    registry.add("sampler", "vllm", "lmforge.plugins.samplers.vllm_engine:VLLMSampler")


@hookimpl
def lmforge_cli_commands():
    return {
        "chat": ("chat with a model dir in the terminal, tokens streamed as generated",
                 "lmforge.plugins.samplers.chat:chat_main"),
    }
