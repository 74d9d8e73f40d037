"""Sampler plugins: generate text from a model (batch sampling, vLLM), and the ``serve`` / ``chat`` commands."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("sampler", "hf_generate", "lmforge.plugins.samplers.hf_generate:HFGenerateSampler")
    registry.add("sampler", "vllm", "lmforge.plugins.samplers.vllm_engine:VLLMSampler")


@hookimpl
def lmforge_cli_commands():
    return {
        "serve": ("serve a model dir over an OpenAI-compatible HTTP API (127.0.0.1 by default)",
                  "lmforge.plugins.serve:serve_main"),
        "chat": ("chat with a model dir in the terminal, tokens streamed as generated",
                 "lmforge.plugins.samplers.chat:chat_main"),
    }
