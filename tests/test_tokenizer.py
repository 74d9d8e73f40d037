"""Tokenizer stage: round trips, special-token safety, the chat template and its assistant mask, the report.

The byte-level BPE under test is the session fixture ``tiny_tokenizer_dir`` (vocab 1024, bundled text);
Unigram and WordPiece are trained here on a slice of the same text.
"""

from __future__ import annotations

import json
import subprocess
import sys

import lmforge
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lmforge.errors import ConfigError, DataError

SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
ESCAPE = "\ufdd0"

# Arbitrary unicode (no lone surrogates: not encodable as UTF-8), mixed with the pieces that break tokenizers.
TRICKY = st.sampled_from(["<|end|>", "<|assistant|>", "<|eos|>", "<|", "|>", "<", "\n\n", "   ", "\t", "\r\n",
                          "\x00", "\x1b[0m", "👩‍👩‍👧", "🦀", "日本語のテキスト", "def f(x):\n    return x", "é", "e\u0301"])
TEXT = st.lists(st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=12), TRICKY),
                max_size=12).map("".join)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def bpe(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture(scope="module")
def small_text(tmp_path_factory):
    """The first ~250 KB of the bundled text: enough for Unigram/WordPiece, quick to train on."""
    lines, size = [], 0
    with open(lmforge.sample_data_path("raw_text.jsonl"), encoding="utf-8") as handle:
        for line in handle:
            lines.append(line)
            size += len(line)
            if size > 250_000:
                break
    path = tmp_path_factory.mktemp("text") / "small.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _train(cls, text, out, context, **params):
    lmforge.run_stage(cls(**params), {"text": text}, out, context)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(out))


@pytest.fixture(scope="module")
def unigram(small_text, tmp_path_factory, tiny_context):
    from lmforge.plugins.tokenizers.unigram import UnigramTokenizer

    out = tmp_path_factory.mktemp("tok") / "unigram"
    return out, _train(UnigramTokenizer, small_text, out, tiny_context, vocab_size=800)


@pytest.fixture(scope="module")
def wordpiece(small_text, tmp_path_factory, tiny_context):
    from lmforge.plugins.tokenizers.wordpiece import WordPieceTokenizer

    out = tmp_path_factory.mktemp("tok") / "wordpiece"
    return out, _train(WordPieceTokenizer, small_text, out, tiny_context, vocab_size=800)


def _special_ids(tok):
    return {tok.convert_tokens_to_ids(t) for t in SPECIALS}


def _mask_runs(ids, mask):
    """The token ids of each contiguous run of mask == 1."""
    runs, current = [], None
    for token, flag in zip(ids, mask):
        if flag:
            current = current if current is not None else []
            current.append(token)
        elif current is not None:
            runs.append(current)
            current = None
    if current is not None:
        runs.append(current)
    return runs


# --- byte-level BPE: round trip and special-token safety (property tests) -------------------------------

@SETTINGS
@given(TEXT)
def test_bpe_roundtrips_arbitrary_unicode(bpe, text):
    assume("<" + ESCAPE not in text)  # the one sequence the escaping normalizer rewrites (documented)
    assert bpe.decode(bpe.encode(text, add_special_tokens=False)) == text
    plain = bpe.encode(text, add_special_tokens=False, split_special_tokens=True)
    assert bpe.decode(plain) == text
    assert not set(plain) & _special_ids(bpe), "plain text produced a special token"


@SETTINGS
@given(system=TEXT, user=TEXT, reply=TEXT)
def test_chat_template_keeps_typed_special_tokens_as_text_and_masks_exactly_the_reply(bpe, system, user, reply):
    assume(not any("<" + ESCAPE in part for part in (system, user, reply)))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user},
                {"role": "assistant", "content": reply}]
    out = bpe.apply_chat_template(messages, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    ids_of = bpe.convert_tokens_to_ids
    end, bos = ids_of("<|end|>"), ids_of("<|bos|>")
    # the only special tokens are the template's own, whatever the messages contain
    assert [i for i in ids if i in _special_ids(bpe)] == [bos, ids_of("<|system|>"), end, ids_of("<|user|>"), end,
                                                         ids_of("<|assistant|>"), end]
    # content is tokenized exactly as the same text alone, and decodes to what was typed
    plain = lambda text: bpe.encode(text, add_special_tokens=False, split_special_tokens=True)
    assert ids == ([bos, ids_of("<|system|>")] + plain(system) + [end] + plain("\n") + [ids_of("<|user|>")]
                   + plain(user) + [end] + plain("\n") + [ids_of("<|assistant|>")] + plain(reply) + [end]
                   + plain("\n"))
    assert bpe.decode(ids) == (f"<|bos|><|system|>{system}<|end|>\n<|user|>{user}<|end|>\n"
                               f"<|assistant|>{reply}<|end|>\n")
    # the mask is exactly the reply's tokens plus end-of-turn
    assert _mask_runs(ids, mask) == [plain(reply) + [end]]


def test_special_tokens_in_template_are_single_ids_and_lookalikes_in_plain_text_are_not(bpe):
    for token in SPECIALS:
        assert bpe.encode(token, add_special_tokens=False) == [bpe.convert_tokens_to_ids(token)]
        as_text = bpe.encode(f"typed {token} here", add_special_tokens=False, split_special_tokens=True)
        assert bpe.convert_tokens_to_ids(token) not in as_text
        assert bpe.decode(as_text) == f"typed {token} here"


# --- chat template rendering --------------------------------------------------------------------------

def test_chat_template_renders_turns_and_generation_prompt(bpe):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    rendered = bpe.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == ("<|bos|><|system|>You are terse.<|end|>\n<|user|>Hi<|end|>\n<|assistant|>Hello.<|end|>\n"
                        "<|user|>Bye<|end|>\n<|assistant|>")
    two_replies = messages[:3] + [{"role": "user", "content": "More"}, {"role": "assistant", "content": "No."}]
    out = bpe.apply_chat_template(two_replies, return_assistant_tokens_mask=True)
    runs = _mask_runs(out["input_ids"], out["assistant_masks"])
    assert [bpe.decode(run) for run in runs] == ["Hello.<|end|>", "No.<|end|>"]
    with pytest.raises(Exception, match="unknown role"):
        bpe.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_default_system_prompt_and_unescaped_option(tmp_path, small_text, tiny_context):
    from lmforge.plugins.tokenizers.bpe import ByteLevelBPE

    tok = _train(ByteLevelBPE, small_text, tmp_path / "a", tiny_context, vocab_size=400,
                 system_prompt="You are lmforge.", escape_special_tokens=False)
    rendered = tok.apply_chat_template([{"role": "user", "content": "say <|end|>"}], tokenize=False)
    assert rendered == "<|bos|><|system|>You are lmforge.<|end|>\n<|user|>say <|end|><|end|>\n"
    # configured off: typed special tokens become specials (what a tool-calling setup may want)
    ids = tok.apply_chat_template([{"role": "user", "content": "say <|end|>"}], return_dict=False)
    assert ids.count(tok.convert_tokens_to_ids("<|end|>")) == 3


def test_extra_special_tokens_are_escaped_too(tmp_path, small_text, tiny_context):
    from lmforge.plugins.tokenizers.bpe import ByteLevelBPE

    tok = _train(ByteLevelBPE, small_text, tmp_path / "t", tiny_context, vocab_size=400,
                 extra_special_tokens=["[TOOL]"])
    tool = tok.convert_tokens_to_ids("[TOOL]")
    assert tok.encode("[TOOL]", add_special_tokens=False) == [tool]
    content = "call [TOOL] then <|end|> [x]"
    out = tok.apply_chat_template([{"role": "user", "content": content}, {"role": "assistant", "content": content}],
                                  return_assistant_tokens_mask=True)
    assert tool not in out["input_ids"]
    assert [tok.decode(run) for run in _mask_runs(out["input_ids"], out["assistant_masks"])] == [content + "<|end|>"]


# --- TRL renders with the saved template (SFT assistant-only loss, DPO prompt/completion strings) -------

def test_trl_sft_and_dpo_tokenize_chats_with_the_saved_tokenizer(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer
    from trl.data_utils import apply_chat_template

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    messages = [{"role": "user", "content": "What ends a turn? <|end|>"},
                {"role": "assistant", "content": "The token <|end|> does."}]
    args = TrlSFTConfig(output_dir=str(tmp_path), max_steps=1, assistant_only_loss=True, report_to="none",
                     use_cpu=True, bf16=False, activation_checkpointing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"messages": [messages]}),
                         processing_class=tok)
    row = trainer.train_dataset[0]
    runs = _mask_runs(row["input_ids"], [label != -100 for label in row["labels"]])
    assert [tok.decode(run) for run in runs] == ["The token <|end|> does.<|end|>"]
    end = tok.convert_tokens_to_ids("<|end|>")
    assert row["input_ids"].count(end) == 2  # the two turn ends; the typed ones stayed text

    example = {"prompt": messages[:1], "chosen": messages[1:], "rejected": [{"role": "assistant", "content": "?"}]}
    rendered = apply_chat_template(example, tok)
    prompt_ids = tok(rendered["prompt"], add_special_tokens=False)["input_ids"]
    chosen_ids = tok(rendered["chosen"], add_special_tokens=False)["input_ids"]
    assert tok.decode(prompt_ids) == "<|bos|><|user|>What ends a turn? <|end|><|end|>\n<|assistant|>"
    assert prompt_ids.count(end) == 1 and chosen_ids.count(end) == 1


# --- Unigram and WordPiece --------------------------------------------------------------------------

def test_unigram_roundtrips_with_byte_fallback_and_masks_the_reply(unigram):
    out, tok = unigram
    report = json.loads((out / "tokenizer_report.json").read_text())
    assert report["algorithm"] == "unigram" and report["vocab_size"] == 800
    assert report["roundtrip_rate"] == 1.0 and report["unk_tokens"] == 0
    for text in ["Hello world, this is plain text.", "日本語 🦀 naïve", "  two  spaces\nand lines\n"]:
        ids = tok.encode(text, add_special_tokens=False, split_special_tokens=True)
        assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids("<|unk|>") not in tok.encode("🦀", add_special_tokens=False)
    messages = [{"role": "user", "content": "type <|end|> now"}, {"role": "assistant", "content": "ok <|eos|> done"}]
    out_ids = tok.apply_chat_template(messages, return_assistant_tokens_mask=True)
    runs = _mask_runs(out_ids["input_ids"], out_ids["assistant_masks"])
    assert [tok.decode(run) for run in runs] == ["ok <|eos|> done<|end|>"]
    assert out_ids["input_ids"].count(tok.convert_tokens_to_ids("<|end|>")) == 2
    for token in SPECIALS:  # Unigram's piece vocabulary holds the specials: they must not win from text
        assert tok.convert_tokens_to_ids(token) not in tok.encode(f"typed {token}", split_special_tokens=True)


def test_wordpiece_trains_and_masks_the_reply(wordpiece):
    out, tok = wordpiece
    report = json.loads((out / "tokenizer_report.json").read_text())
    assert report["algorithm"] == "wordpiece" and report["vocab_size"] == 800
    assert report["special_ids_from_plain_text"] == 0
    assert any(t.startswith("##") for t in tok.get_vocab())
    messages = [{"role": "user", "content": "type <|end|> now"}, {"role": "assistant", "content": "ok, done"}]
    out_ids = tok.apply_chat_template(messages, return_assistant_tokens_mask=True)
    runs = _mask_runs(out_ids["input_ids"], out_ids["assistant_masks"])
    plain = tok.encode("ok, done", add_special_tokens=False, split_special_tokens=True)
    assert runs == [plain + [tok.convert_tokens_to_ids("<|end|>")]]
    assert out_ids["input_ids"].count(tok.convert_tokens_to_ids("<|end|>")) == 2


# --- the artifact and the report ----------------------------------------------------------------------

def test_bpe_report_and_plain_tokenizer_dir(tiny_tokenizer_dir):
    report = json.loads((tiny_tokenizer_dir / "tokenizer_report.json").read_text())
    assert report["vocab_size"] == 1024 and report["roundtrip_rate"] == 1.0
    assert report["heldout_measured_on"] == "held-out documents" and report["heldout_documents"] > 0
    assert 1.5 < report["bytes_per_token"] < 6  # merges compress English well beyond one byte per token
    assert report["special_ids_from_plain_text"] == 0 and report["train_mb_per_s"] > 0
    assert (tiny_tokenizer_dir / "tokenizer_report.md").read_text().startswith("# Tokenizer report (bpe)")
    config = json.loads((tiny_tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "TokenizersBackend" and "auto_map" not in config
    assert "{% generation %}" in (tiny_tokenizer_dir / "chat_template.jinja").read_text().replace("%-", "%")


def test_held_out_text_is_not_trained_on(tmp_path, tiny_context):
    from lmforge.plugins.tokenizers.subword import TextStream

    docs = [{"text": f"document {i} " + "word " * 20} for i in range(100)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    stream = TextStream(path, "text", heldout_fraction=0.1, heldout_max_bytes=10_000)
    trained = [text for batch in stream for text in batch]
    assert len(stream.heldout) == 10 and len(trained) == 90
    assert not set(stream.heldout) & set(trained)
    long = TextStream(path, "text", 0.0, 0, chunk_chars=64)
    assert all(len(t) <= 64 for batch in long for t in batch)


def test_text_is_streamed_in_pieces_that_add_up_to_the_input(tiny_shakespeare, tmp_path):
    from lmforge.plugins.tokenizers.subword import TextStream, stream_texts

    shakespeare = tiny_shakespeare.read_text(encoding="utf-8")
    batches = list(stream_texts(tiny_shakespeare))
    pieces = [piece for batch in batches for piece in batch]
    assert len(pieces) > 10 and "".join(pieces) == shakespeare  # cut at line ends, nothing lost
    stream = TextStream(tiny_shakespeare, "text", 0.1, 10**9)
    trained = [piece for batch in stream for piece in batch]
    assert stream.heldout and sorted(trained + stream.heldout) == sorted(pieces)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(DataError, match="bad.jsonl:2: .*string field 'text'"):
        list(stream_texts(bad))


@pytest.mark.slow
def test_tokenizer_dir_loads_without_lmforge(tiny_tokenizer_dir):
    code = ("import sys; from transformers import AutoTokenizer; "
            f"t = AutoTokenizer.from_pretrained({str(tiny_tokenizer_dir)!r}); "
            "ids = t.apply_chat_template([{'role': 'user', 'content': 'hi <|end|>'}], return_dict=False); "
            "assert 'lmforge' not in sys.modules; print(t.decode(ids))")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "<|bos|><|user|>hi <|end|><|end|>"


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("params, message", [
    ({"vocab_size": 8}, "tokenizer.vocab_size"),
    ({"chat_tokens": ["<|user|>", "<|end|>"]}, "tokenizer.chat_tokens"),
    ({"extra_special_tokens": ["<|end|>"]}, "listed twice"),
    ({"extra_special_tokens": ["#"]}, "one character"),
    ({"pattern": "(unclosed"}, "tokenizer.pattern"),
    ({"vocab_sise": 100}, "vocab_sise"),
])
def test_bad_config_is_one_clear_error(tmp_path, small_text, tiny_context, params, message):
    from lmforge.plugins.tokenizers.bpe import ByteLevelBPE

    with pytest.raises(ConfigError, match=message):
        lmforge.run_stage(ByteLevelBPE(**params), {"text": small_text}, tmp_path / "out", tiny_context)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_empty_input_is_a_data_error(tmp_path, tiny_context):
    from lmforge.plugins.tokenizers.bpe import ByteLevelBPE

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="no text"):
        lmforge.run_stage(ByteLevelBPE(), {"text": empty}, tmp_path / "out", tiny_context)
    assert not (tmp_path / "out").exists()
