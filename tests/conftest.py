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

import shutil
from pathlib import Path

import lmforge
import pytest

TEST_DATA = Path(__file__).resolve().parent / "data"
TINY_MODEL = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
              "tie_word_embeddings": True}


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


class CrashedAtStep(Exception):
    """What the ``crash_training_at`` fixture raises inside a training stage (a stand-in for a kill)."""


@pytest.fixture
def crash_training_at():
    """``crash_training_at(step, run)``: call ``run()`` (one ``run_stage``) with a metrics-hook plugin that
    raises once training logs ``step``, expect that crash, and leave the plugin manager as it was."""

    def crash(step: int, run) -> None:
        plugin = _CrashAfter(step)
        pm = lmforge.plugin_manager()
        pm.register(plugin)
        try:
            with pytest.raises(CrashedAtStep):
                run()
        finally:
            pm.unregister(plugin)

    return crash


class _CrashAfter:
    def __init__(self, step: int):
        self.step = step

    @lmforge.hookimpl
    def lmforge_log_metrics(self, stage_name, step, metrics, context):
        if step is not None and step >= self.step and "loss" in metrics:
            raise CrashedAtStep(f"crash at step {step}")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """tests/data: subsets of real public data sets (sources, rows and licences in tests/data/README.md)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def tiny_shakespeare() -> Path:
    """Tiny Shakespeare (1.1 MB, public domain), the copy the package ships for ``pipeline=shakespeare_char``."""
    return Path(lmforge.sample_data_path("tinyshakespeare.txt"))


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


class FakeHub:
    """A Hugging Face hub cache laid out as ``huggingface_hub`` writes it, for offline Hub-id tests.

    ``models--org--name/snapshots/<commit>/…`` with ``refs/<revision>`` holding the commit (and the same for
    ``datasets--org--name``): exactly what a user's populated cache looks like to ``HF_HUB_OFFLINE=1`` code.
    """

    def __init__(self, root: Path):
        self.root = root

    def _add(self, kind: str, repo_id: str, files: Path | dict, revision: str) -> str:
        import hashlib
        import shutil

        commit = hashlib.sha1(f"{kind}:{repo_id}@{revision}".encode()).hexdigest()
        repo = self.root / f"{kind}s--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        if isinstance(files, dict):
            for name, content in files.items():
                (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    (snapshot / name).write_bytes(content)
                else:
                    (snapshot / name).write_text(content)
        else:
            shutil.copytree(files, snapshot, dirs_exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
        return commit

    def add_model(self, repo_id: str, files: Path | dict, revision: str = "main") -> str:
        """Put a model dir (or {name: content}) in the cache as ``repo_id`` at ``revision``; returns the commit."""
        return self._add("model", repo_id, files, revision)

    def add_dataset(self, repo_id: str, files: Path | dict, revision: str = "main") -> str:
        """Put data files (a dir or {name: content}) in the cache as dataset ``repo_id``; returns the commit."""
        return self._add("dataset", repo_id, files, revision)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    """An empty HF hub cache under tmp_path, made the cache of this test (and its subprocesses), offline."""
    import huggingface_hub.constants as hub_constants

    root = tmp_path / "hf_hub_cache"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    try:
        import datasets.config

        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    except ImportError:
        pass
    return FakeHub(root)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def headless_chromium(tmp_path):
    """Starts a headless chromium (selenium + Debian's chromedriver) when called; skips the test right there when
    either is missing, so the parts of a test before the browser still run. Every browser started is closed."""
    drivers = []

    def start():
        webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
        if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
            pytest.skip("needs Debian's chromium and chromedriver (apt-get install chromium chromium-driver)")
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / f'chromium-profile-{len(drivers)}'}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def browser(headless_chromium):
    """A headless chromium for the whole test (skipped where chromium is absent)."""
    return headless_chromium()
