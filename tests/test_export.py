"""``lmforge export``: the exported chat template renders with vanilla jinja2 (no ``{% generation %}``, no U+FDD0)
and tokenizes conversations exactly as the training template does; GGUF without llama.cpp fails at once."""

from __future__ import annotations

import json

import pytest
from lmforge.cli import main

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is 2 < 3? Say <yes>."},
            {"role": "assistant", "content": "Yes: 2 < 3."}, {"role": "user", "content": "Thanks!"}]


def test_exported_template_is_plain_jinja_and_tokenizes_the_same(tiny_model_dir, tmp_path, capsys):
    import jinja2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "exported"
    main(["export", str(tiny_model_dir), "-o", str(out)])
    assert f"lmforge: export: {out}" in capsys.readouterr().out
    original = (tiny_model_dir / "chat_template.jinja").read_text()
    exported = (out / "chat_template.jinja").read_text()
    with pytest.raises(jinja2.TemplateSyntaxError):  # the training template needs HF's generation extension
        jinja2.Environment().from_string(original)
    assert "{%- generation" not in exported and "endgeneration" not in exported
    assert "\\ufdd0" not in exported and "\ufdd0" not in exported
    rendered = jinja2.Environment().from_string(exported).render(messages=MESSAGES, add_generation_prompt=True,
                                                                 bos_token="<|bos|>")
    assert "Is 2 < 3? Say <yes>." in rendered and "\ufdd0" not in rendered

    trained, plain = AutoTokenizer.from_pretrained(str(tiny_model_dir)), AutoTokenizer.from_pretrained(str(out))
    assert plain.apply_chat_template(MESSAGES, add_generation_prompt=True) == \
        trained.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert AutoModelForCausalLM.from_pretrained(str(out)).config.vocab_size == len(trained)
    assert not (out / "manifest.json").exists()
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert "endgeneration" not in (config.get("chat_template") or "")


def test_gguf_without_llama_cpp_says_how_before_any_work(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_model_dir), "--to", "gguf", "-o", str(tmp_path / "m.gguf")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "convert_hf_to_gguf.py" in err and "git clone https://github.com/ggml-org/llama.cpp" in err
    assert len(err.splitlines()) == 1
    assert not tiny_model_dir.with_name(tiny_model_dir.name + "-export").exists()


def test_export_refuses_a_directory_that_is_no_model(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path)])
    assert "not a model directory" in capsys.readouterr().err


def test_export_leaves_evaluator_and_stage_files_behind(tiny_model_dir, tmp_path):
    """A stage dir as a run leaves it: model files plus the stage's and its evaluators' files (answers.jsonl,
    taught_answers.jsonl, win_rate.json, a plot, ...); only what a runtime loads reaches the export."""

    from transformers import AutoModelForCausalLM, AutoTokenizer

    stage = tmp_path / "aligner"  # the model files alone (other tests' evaluators may have written into the fixture)
    AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).save_pretrained(str(stage))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(stage))
    model = sorted(p.name for p in stage.iterdir())
    lmforge_own = {"manifest.json": "{}", "metrics.jsonl": "", "eval.json": "{}", "completions.jsonl": "",
                   "answers.jsonl": '{"prompt": "Hi", "answer": "Hello"}\n', "taught_answers.jsonl": "",
                   "win_rate.json": '{"score": 0.5}', "train_summary.json": "{}", "language_map.png": "",
                   "some_new_evaluator.json": "{}"}
    for name, text in lmforge_own.items():
        (stage / name).write_text(text)
    (stage / "adapter").mkdir()
    (stage / "adapter" / "adapter_config.json").write_text("{}")
    out = tmp_path / "exported"
    main(["export", str(stage), "-o", str(out)])
    assert sorted(p.name for p in out.iterdir()) == model
    assert AutoTokenizer.from_pretrained(str(out)) is not None
    assert AutoModelForCausalLM.from_pretrained(str(out)).config.vocab_size > 0
