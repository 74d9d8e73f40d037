"""``lmforge export MODEL_DIR``: a model directory as deployment runtimes want it (HF layout, or GGUF).

Why an export step: the chat template lmforge saves is made for training — its assistant turns sit inside
``{% generation %}`` markers (HF's extension for assistant-only loss masks) and message content is escaped
with U+FDD0, which only lmforge's tokenizer normaliser removes again. Runtimes that render the template
themselves (llama.cpp/Ollama's minja, vLLM, plain jinja2) either refuse the unknown tag or feed the extra
character to the model. The exported copy carries the same template without either: same turns, same tokens
for ordinary text, renderable by vanilla jinja2. (Without the escape, a user who types a special-token
string such as ``<|end|>`` in a message gets it read as that token — as with most published chat models.)

``--to gguf`` runs llama.cpp's own converter (``convert_hf_to_gguf.py``) on that copy. It is not on PyPI (the
``gguf`` package there holds the file-format library, not the converter), so it is found in a llama.cpp
checkout named by ``--llama-cpp DIR`` or ``LLAMA_CPP_DIR``; without one the command says how to get it,
before doing any work.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from lmforge import hookimpl
from lmforge.errors import ConfigError

# What a Hugging Face model directory needs, and nothing else: a stage's own files and its evaluators' (manifest,
# metrics, eval.json, answers.jsonl, win_rate.json, plots, ...) stay behind, whatever new ones appear.
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt",
               "merges.txt", "tokenizer.model", "spiece.model", "chat_template.jinja", "chat_template.json",
               "README.md"}
MODEL_SUFFIXES = (".safetensors",)
_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")
_ESCAPE_FILTER = re.compile(r"\s*\|\s*replace\(\s*\"(?:[^\"\\]|\\.)*\"\s*,\s*\"(?:[^\"\\]|\\.)*\\ufdd0\"\s*\)")
CONVERTER = "convert_hf_to_gguf.py"
GET_CONVERTER = ("git clone https://github.com/ggml-org/llama.cpp && pip install -r "
                 "llama.cpp/requirements/requirements-convert_hf_to_gguf.txt, then pass --llama-cpp llama.cpp "
                 "(or set LLAMA_CPP_DIR)")


def plain_chat_template(template: str) -> str:
    """The template without ``{% generation %}`` markers and without the U+FDD0 content escape."""
    return _ESCAPE_FILTER.sub("", _GENERATION_TAG.sub("", template))


def check_renders(template: str) -> str:
    """Render a short conversation with vanilla jinja2 (no extensions, sandboxed); return the text."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <there>"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, bos_token="",
                                            eos_token="")


def model_files(model_dir: Path) -> list[Path]:
    """The files of ``model_dir`` a runtime loads: weights (``*.safetensors`` and their index), configs, tokenizer,
    chat template, model card (:data:`MODEL_FILES`), and the code files a config's ``auto_map`` names."""
    model_dir = Path(model_dir)
    code = set()
    for name in ("config.json", "tokenizer_config.json"):
        try:
            auto_map = json.loads((model_dir / name).read_text()).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for targets in auto_map.values():
            for target in targets if isinstance(targets, list) else [targets]:
                if isinstance(target, str) and "." in target:
                    code.add(target.split("--")[-1].rsplit(".", 1)[0] + ".py")
    return sorted(item for item in model_dir.iterdir() if item.is_file() and (
        item.name in MODEL_FILES or item.name.endswith(MODEL_SUFFIXES) or item.name in code))


def export_hf(model_dir: Path, out_dir: Path) -> Path:
    """Copy a model dir's model files (:func:`model_files`: weights, configs, tokenizer) with a runtime-ready chat
    template into ``out_dir``; everything else in it (lmforge's and its evaluators' files) stays behind."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"export: {model_dir}: not a model directory (no config.json)")
    if not list(model_dir.glob("*.safetensors")):
        raise ConfigError(f"export: {model_dir}: no .safetensors weights (lmforge exports safetensors only)")
    if out_dir.resolve() == model_dir.resolve():
        raise ConfigError("export: the output directory must differ from the model directory")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for item in model_files(model_dir):
        shutil.copy2(item, partial / item.name)
    templates = 0
    jinja = partial / "chat_template.jinja"
    if jinja.is_file():
        jinja.write_text(plain_chat_template(jinja.read_text()))
        check_renders(jinja.read_text())
        templates += 1
    config = partial / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        if isinstance(data.get("chat_template"), str):
            data["chat_template"] = plain_chat_template(data["chat_template"])
            check_renders(data["chat_template"])
            config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            templates += 1
    if not templates:
        shutil.rmtree(partial)
        raise ConfigError(f"export: {model_dir}: no chat template (chat_template.jinja or tokenizer_config.json)")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir


def find_converter(llama_cpp: str | None) -> Path:
    root = llama_cpp or os.environ.get("LLAMA_CPP_DIR")
    if not root:
        raise ConfigError(f"export --to gguf: needs llama.cpp's {CONVERTER} (not on PyPI): {GET_CONVERTER}")
    script = Path(root) / CONVERTER
    if not script.is_file():
        raise ConfigError(f"export --to gguf: {script} not found; expected a llama.cpp checkout: {GET_CONVERTER}")
    return script


def export_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge export", description=(
        "Copy a model dir with a chat template any jinja renderer accepts (--to hf), or convert it to GGUF "
        "for llama.cpp / Ollama with llama.cpp's own converter (--to gguf)."))
    parser.add_argument("model_dir", help="a model directory, e.g. runs/default/aligner")
    parser.add_argument("--to", choices=("hf", "gguf"), default="hf")
    parser.add_argument("-o", "--out", help="output: a directory for hf (default <model_dir>-export), a .gguf file "
                                            "for gguf (default <model_dir>.gguf)")
    parser.add_argument("--outtype", default="f16", help="GGUF tensor type passed to the converter (f32, f16, bf16, q8_0)")
    parser.add_argument("--llama-cpp", help="a llama.cpp checkout (default: $LLAMA_CPP_DIR)")
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir).resolve()
    converter = find_converter(args.llama_cpp) if args.to == "gguf" else None  # fail before any work
    hf_out = Path(args.out) if args.out and args.to == "hf" else model_dir.with_name(model_dir.name + "-export")
    exported = export_hf(model_dir, hf_out)
    if args.to == "hf":
        print(f"lmforge: export: {exported}")
        return 0
    gguf = Path(args.out) if args.out else model_dir.with_name(model_dir.name + ".gguf")
    command = [sys.executable, str(converter), str(exported), "--outfile", str(gguf), "--outtype", args.outtype]
    result = subprocess.run(command, check=False)
    if result.returncode:
        raise ConfigError(f"export --to gguf: {CONVERTER} exited {result.returncode} (its output is above)")
    print(f"lmforge: export: {gguf}")
    return 0


@hookimpl
def lmforge_cli_commands():
    return {"export": ("a model dir for runtimes: plain chat template (--to hf) or GGUF for llama.cpp/Ollama",
                       export_command)}
