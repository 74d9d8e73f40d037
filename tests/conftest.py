"""Shared test setup: one thread for torch, no network, and tiny artifacts built once per session.

Fixtures build real artifacts with lmforge's own stages (a BPE tokenizer trained on the bundled text, a
randomly initialised tiny Llama) so stage tests start from what a pipeline would hand them.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from pathlib import Path

import lmforge
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_MODEL = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
              "tie_word_embeddings": True}


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data sets beside the checkout (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_context():
    """A RunContext for direct stage calls: CPU, fp32, quiet, the tiny model preset."""
    return lmforge.RunContext(hardware=lmforge.Hardware(device="cpu", precision="fp32"), quiet=True,
                              model=dict(TINY_MODEL))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, tiny_context) -> Path:
    """A byte-level BPE tokenizer (vocab 1024, chat tokens + template) trained on the bundled raw text."""
    from lmforge.plugins.tokenizers.bpe import ByteLevelBPE

    out = tmp_path_factory.mktemp("artifacts") / "tokenizer"
    lmforge.run_stage(ByteLevelBPE(vocab_size=1024), {"text": lmforge.sample_data_path("raw_text.jsonl")}, out,
                      tiny_context)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A randomly initialised tiny Llama (hidden 64, 2 layers) saved with the tokenizer: a plain model dir."""
    from lmforge.plugins.pretrainers.hf_trainer import build_model_config
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    model = AutoModelForCausalLM.from_config(build_model_config(TINY_MODEL, tokenizer))
    out = tmp_path_factory.mktemp("artifacts") / "tiny_model"
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def varied_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A random tiny Llama whose greedy answers differ from prompt to prompt (untied, wide init).

    Tied-embedding random models only ever emit "\n" greedily, which makes output-checking tests vacuous.
    The directory name is the model id the server reports.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, set_seed

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out = tmp_path_factory.mktemp("artifacts") / "forge-tiny"
    AutoModelForCausalLM.from_config(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
