"""What every subword tokenizer plugin shares: special tokens, the chat template, streaming, saving, the report.

The BPE, Unigram and WordPiece plugins differ only in the HF ``tokenizers`` model, trainer, pre-tokenizer and
decoder they build; this module does the rest the same way for all three, so their outputs behave alike.

Why the chat template escapes message content: a chat template renders a conversation to one string and the
tokenizer then matches special-token strings anywhere in it, so a user who types ``<|end|>`` would otherwise
close their own turn (and could forge an assistant turn). The template inserts the Unicode noncharacter
U+FDD0 (reserved by Unicode for internal use) after the first character of every special-token look-alike in
message content (``<|end|>`` becomes ``<`` U+FDD0 ``|end|>``), which the tokenizer's first pass -- special
tokens matched on raw text -- no longer recognises; the tokenizer's normalizer then removes that character
again, so the content is tokenized exactly as the plain text would be and decodes to what the user typed.
The guard lives in the saved ``chat_template.jinja`` + ``tokenizer.json``, so vanilla ``AutoTokenizer``
users, TRL's SFT/DPO trainers and lmforge's own stages all get it with no lmforge import, and assistant masks
(``{% generation %}``) keep working. The saved ``split_special_tokens`` stays False: TRL and
``apply_chat_template`` tokenize the rendered string with the tokenizer's default, and True would split the
template's own special tokens too. Plain text encoded without the template (``tokenizer(text)``) is the
caller's choice: pass ``split_special_tokens=True`` to keep look-alikes as text there too.
The normalizer is installed whatever ``escape_special_tokens`` says (that key only changes the template).
The one cost: in plain text, U+FDD0 right after the first character of a special token is dropped on encode.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lmforge import Tokenizer
from lmforge.errors import ConfigError, DataError
from lmforge.plugins.inspect.tokens import SAMPLE_SENTENCES, WORD, plain_view, spans_from_offsets
from lmforge.plugins.lib.data import iter_texts

ESCAPE = "\ufdd0"  # a Unicode noncharacter: never assigned, meant for internal use
CHUNK_CHARS = 1 << 16  # long documents (a whole .txt file) are cut at line ends into pieces about this long
FALLBACK_SAMPLE_BYTES = 256_000  # training text kept to measure on when the input is too small to hold out


def save_chat_tokenizer(tokenizer, cfg: ChatTokensConfig, specials: list[str], output_dir):
    """Wrap a trained ``tokenizers.Tokenizer`` with its special tokens and chat template; save the HF dir."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=cfg.bos_token, eos_token=cfg.eos_token,
        pad_token=cfg.pad_token, unk_token=cfg.unk_token,
        additional_special_tokens=[*cfg.chat_tokens, *cfg.extra_special_tokens],
        model_max_length=cfg.max_length,
    )
    hf.chat_template = chat_template(cfg.chat_tokens, escape_chars(specials) if cfg.escape_special_tokens else "",
                                     cfg.system_prompt)
    hf.save_pretrained(str(output_dir))
    return hf


@dataclass
class ChatTokensConfig:
    """Special tokens and chat-template settings every lmforge tokenizer shares (subword and char)."""

    max_length: int = 1024  # model_max_length saved with the tokenizer
    bos_token: str = "<|bos|>"
    eos_token: str = "<|eos|>"
    pad_token: str = "<|pad|>"
    unk_token: str = "<|unk|>"
    # system, user, assistant, end-of-turn -- in that order
    chat_tokens: list[str] = field(default_factory=lambda: ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"])
    extra_special_tokens: list[str] = field(default_factory=list)
    text_field: str = "text"
    system_prompt: str | None = None  # written by the chat template when a conversation has no system turn
    escape_special_tokens: bool = True  # False: special-token strings typed in message content become specials

    def __post_init__(self):
        from lmforge.params import at_least

        at_least(self, 8, "max_length")
        if len(self.chat_tokens) != 4 or not all(isinstance(t, str) and t for t in self.chat_tokens):
            raise ConfigError(f"chat_tokens: expected 4 non-empty tokens (system, user, assistant, end-of-turn), "
                              f"got {self.chat_tokens!r}")


@dataclass
class SubwordConfig(ChatTokensConfig):
    vocab_size: int = 2048
    heldout_fraction: float = 0.05  # of documents kept out of training to measure bytes/token on ...
    heldout_max_bytes: int = 300_000  # ... until this many bytes are held out

    def __post_init__(self):
        from lmforge.params import at_least

        super().__post_init__()
        at_least(self, 1, "vocab_size")
        at_least(self, 0, "heldout_max_bytes")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction: must be in [0, 1), got {self.heldout_fraction}")


class SubwordTokenizer(Tokenizer):
    """Trains an HF ``tokenizers`` model by streaming text batches, then saves a chat-ready tokenizer directory.

    Subclasses implement :meth:`build` (model, pre-tokenizer, decoder, trainer) and may override
    :meth:`finish` (post-training changes) and :meth:`token_bytes` (a vocabulary entry's length in bytes).
    """

    config_class: ClassVar[type] = SubwordConfig
    algorithm: ClassVar[str] = ""

    def build(self, specials: list[str], context):
        """Return ``(tokenizers.Tokenizer, trainer)`` for this algorithm."""
        raise NotImplementedError

    def finish(self, tokenizer):
        """Adjust the trained tokenizer (decoder, post-processor, extra vocabulary); return it."""
        return tokenizer

    def token_bytes(self, token: str) -> int:
        return len(token.encode("utf-8"))

    def run(self, inputs, output_dir, context):
        from tokenizers import Regex, normalizers

        cfg = self.config
        specials = special_tokens(cfg)
        tokenizer, trainer = self.build(specials, context)
        # drop U+FDD0 after a first character: that character keeps its own offsets, so masks stay exact
        firsts = "".join(f"\\x{{{ord(c):X}}}" for c in escape_chars(specials))
        unescape = normalizers.Replace(Regex(f"(?<=[{firsts}])\\x{{{ord(ESCAPE):X}}}"), "")
        existing = [tokenizer.normalizer] if tokenizer.normalizer is not None else []
        tokenizer.normalizer = normalizers.Sequence([unescape, *existing])
        stream = TextStream(inputs["text"], cfg.text_field, cfg.heldout_fraction, cfg.heldout_max_bytes)
        started = time.perf_counter()
        tokenizer.train_from_iterator(stream, trainer=trainer)
        seconds = time.perf_counter() - started
        if stream.train_bytes == 0:
            raise DataError(f"{inputs['text']}: no text to train the tokenizer on (field '{cfg.text_field}')")
        tokenizer = self.finish(tokenizer)
        save_chat_tokenizer(tokenizer, cfg, specials, output_dir)
        report = self.report(tokenizer, specials, stream, seconds)
        (Path(output_dir) / "tokenizer_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
        (Path(output_dir) / "tokenizer_report.md").write_text(report_markdown(report))
        context.log_metrics({k: v for k, v in report.items() if isinstance(v, (int, float))})
        return output_dir

    def report(self, tokenizer, specials: list[str], stream: TextStream, seconds: float) -> dict[str, Any]:
        """Bytes/token on held-out text, vocabulary stats, round-trip results, training throughput."""
        texts, measured_on = stream.heldout, "held-out documents"
        if not texts:
            texts, measured_on = stream.sample, "training documents (none held out)"
        tokenizer.encode_special_tokens = True  # measure plain text: look-alikes of specials stay text
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        special_ids = {tokenizer.token_to_id(t) for t in specials}
        ids = [e.ids for e in encodings]
        decoded = tokenizer.decode_batch(ids, skip_special_tokens=False)
        samples = tokenizer.encode_batch(list(SAMPLE_SENTENCES), add_special_tokens=False)
        tokenizer.encode_special_tokens = False
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        n_tokens = sum(len(i) for i in ids)
        failures = [(t, d) for t, d in zip(texts, decoded) if t != d]
        vocab = tokenizer.get_vocab()
        learned = [tok for tok in vocab if tok not in specials]
        lengths = [self.token_bytes(tok) for tok in learned]
        used = {i for seq in ids for i in seq}
        unk_id = tokenizer.token_to_id(self.config.unk_token)
        report = {
            "algorithm": self.algorithm,
            "vocab_size": tokenizer.get_vocab_size(with_added_tokens=False),
            "train_documents": stream.train_documents,
            "train_bytes": stream.train_bytes,
            "train_seconds": round(seconds, 3),
            "train_mb_per_s": round(stream.train_bytes / 1e6 / max(seconds, 1e-9), 3),
            "heldout_measured_on": measured_on,
            "heldout_documents": len(texts),
            "heldout_bytes": n_bytes,
            "heldout_tokens": n_tokens,
            "bytes_per_token": round(n_bytes / max(n_tokens, 1), 4),
            "unk_tokens": sum(seq.count(unk_id) for seq in ids) if unk_id is not None else 0,
            "special_ids_from_plain_text": sum(1 for seq in ids for i in seq if i in special_ids and i != unk_id),
            "roundtrip_exact": len(texts) - len(failures),
            "roundtrip_rate": round((len(texts) - len(failures)) / max(len(texts), 1), 4),
            "special_tokens": specials,
            "learned_tokens": len(learned),
            "mean_token_bytes": round(sum(lengths) / max(len(lengths), 1), 3),
            "max_token_bytes": max(lengths, default=0),
            "vocab_used_on_heldout": round(len(used - special_ids) / max(len(learned), 1), 4),
            "longest_tokens": sorted(learned, key=self.token_bytes, reverse=True)[:10],
            # Tokens per word (runs of letters/digits) on the held-out text: ~1.3 for English with a large vocab.
            "fertility": round(n_tokens / max(sum(len(WORD.findall(t)) for t in texts), 1), 4),
            "token_view": {text: plain_view(spans_from_offsets(text, e.ids, e.tokens, e.offsets))
                           for text, e in zip(SAMPLE_SENTENCES, samples)},
        }
        if failures:
            original, got = failures[0]
            where = next((i for i, (a, b) in enumerate(zip(original, got)) if a != b), min(len(original), len(got)))
            report["roundtrip_first_failure"] = {"at_char": where, "expected": original[max(0, where - 20):where + 20],
                                                 "got": got[max(0, where - 20):where + 20]}
        return report


def special_tokens(cfg: SubwordConfig) -> list[str]:
    """The special tokens in id order (pad, bos, eos, unk, chat tokens, extras), checked."""
    if len(cfg.chat_tokens) != 4:
        raise ConfigError(f"tokenizer.chat_tokens: expected 4 tokens (system, user, assistant, end-of-turn), "
                          f"got {len(cfg.chat_tokens)}")
    specials = [cfg.pad_token, cfg.bos_token, cfg.eos_token, cfg.unk_token, *cfg.chat_tokens,
                *cfg.extra_special_tokens]
    for token in specials:
        if not token:
            raise ConfigError("tokenizer: a special token is empty")
        if ESCAPE in token:
            raise ConfigError(f"tokenizer: special token {token!r} contains U+FDD0, which the chat template reserves")
        if len(token) < 2:
            raise ConfigError(f"tokenizer: special token {token!r} is one character; at least two are needed so "
                              f"that its look-alikes in text can be escaped")
    duplicate = next((t for i, t in enumerate(specials) if t in specials[:i]), None)
    if duplicate:
        raise ConfigError(f"tokenizer: special token {duplicate!r} is listed twice")
    if cfg.vocab_size <= len(specials):
        raise ConfigError(f"tokenizer.vocab_size: {cfg.vocab_size} leaves no room beside {len(specials)} special tokens")
    if not 0 <= cfg.heldout_fraction < 1:
        raise ConfigError(f"tokenizer.heldout_fraction: expected a fraction in [0, 1), got {cfg.heldout_fraction}")
    return specials


def escape_chars(specials: list[str]) -> str:
    """The first characters of the special tokens: each is followed by U+FDD0 in escaped message content."""
    return "".join(sorted({token[0] for token in specials}))


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)  # a JSON string is also a valid Jinja string literal


def chat_template(chat_tokens: list[str], escape: str = "", system_prompt: str | None = None) -> str:
    """The chat template: role tokens, end-of-turn inside the assistant's ``{% generation %}`` span.

    Layout: ``<|bos|><|system|>…<|end|>\\n<|user|>…<|end|>\\n<|assistant|>…<|end|>\\n``. Content follows its role
    token directly (no newline), so it is tokenized exactly as the same text alone would be and the assistant
    mask covers the reply's tokens plus ``<|end|>``, nothing of the template.

    ``escape`` lists the characters after which U+FDD0 is inserted in message content (see the module docstring).
    """
    system, user, assistant, end = (_literal(t) for t in chat_tokens)
    escaping = "".join(f" | replace({_literal(c)}, {_literal(c + ESCAPE)})" for c in escape)
    default_system = ""
    if system_prompt:
        default_system = ("{%- if messages[0]['role'] != 'system' %}"
                          f"{{%- set messages = [{{'role': 'system', 'content': {_literal(system_prompt)}}}] + messages %}}"
                          "{%- endif %}")
    return (
        "{{- bos_token }}" + default_system +
        "{%- for message in messages %}"
        f"{{%- set content = message['content']{escaping} %}}"
        f"{{%- if message['role'] == 'system' %}}{{{{ {system} + content + {end} + '\\n' }}}}"
        f"{{%- elif message['role'] == 'user' %}}{{{{ {user} + content + {end} + '\\n' }}}}"
        f"{{%- elif message['role'] == 'assistant' %}}{{{{ {assistant} }}}}"
        f"{{%- generation %}}{{{{ content + {end} }}}}{{%- endgeneration %}}{{{{ '\\n' }}}}"
        "{%- else %}{{ raise_exception('chat template: unknown role ' + message['role'] + "
        "'; expected system, user or assistant') }}"
        "{%- endif %}"
        "{%- endfor %}"
        f"{{%- if add_generation_prompt %}}{{{{ {assistant} }}}}{{%- endif %}}"
    )


class TextStream:
    """Batches of training text, streamed; a deterministic share of documents is held out for the report."""

    def __init__(self, path, text_field: str, heldout_fraction: float, heldout_max_bytes: int,
                 chunk_chars: int = CHUNK_CHARS):
        """``chunk_chars``: documents longer than this are cut at line ends (held out or trained piece by piece)."""
        self.path, self.text_field = path, text_field
        self.heldout_fraction, self.heldout_max_bytes, self.chunk_chars = heldout_fraction, heldout_max_bytes, chunk_chars
        self.heldout: list[str] = []
        self.sample: list[str] = []
        self.heldout_bytes = self.train_bytes = self.train_documents = self.sample_bytes = 0

    def __iter__(self) -> Iterator[list[str]]:
        index = 0
        for batch in stream_texts(self.path, self.text_field):
            train = []
            for text in batch:
                if not isinstance(text, str):
                    raise DataError(f"{self.path}: document {index} has a non-string '{self.text_field}'")
                for piece in _chunks(text, self.chunk_chars):
                    size = len(piece.encode("utf-8"))
                    if self._hold_out(index, piece, size):
                        self.heldout.append(piece)
                        self.heldout_bytes += size
                    else:
                        train.append(piece)
                        self.train_bytes += size
                        self.train_documents += 1
                        if self.sample_bytes < FALLBACK_SAMPLE_BYTES:
                            self.sample.append(piece)
                            self.sample_bytes += size
                    index += 1
            if train:
                yield train

    def _hold_out(self, index: int, piece: str, size: int) -> bool:
        if self.heldout_bytes + size > self.heldout_max_bytes or not piece.strip():
            return False
        # spread evenly: document i is held out when (i + 1) * fraction passes an integer
        return int((index + 1) * self.heldout_fraction) > int(index * self.heldout_fraction)


def stream_texts(path, text_field: str = "text", batch_size: int = 1000) -> Iterator[list[str]]:
    """Batches of texts read lazily from any data input: records one by one, .txt/.md in pieces of about
    64k characters cut at line ends (``lmforge.plugins.lib.data``, ``txt_mode="chunk"``)."""
    yield from iter_texts(path, text_field, batch_size, txt_mode="chunk")


def _chunks(text: str, size: int) -> Iterator[str]:
    """``text`` cut after a newline into pieces of about ``size`` characters (one piece if it is short)."""
    start = 0
    while len(text) - start > size:
        cut = text.rfind("\n", start + size // 2, start + size)
        cut = start + size if cut < 0 else cut + 1
        yield text[start:cut]
        start = cut
    if start < len(text) or not text:
        yield text[start:]


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Tokenizer report ({report['algorithm']})", "",
             "| measure | value |", "|---|---|"]
    for key in ("vocab_size", "learned_tokens", "train_documents", "train_bytes", "train_seconds", "train_mb_per_s",
                "heldout_measured_on", "heldout_documents", "heldout_bytes", "heldout_tokens", "bytes_per_token",
                "unk_tokens", "special_ids_from_plain_text", "roundtrip_exact", "roundtrip_rate", "mean_token_bytes",
                "max_token_bytes", "vocab_used_on_heldout", "fertility"):
        lines.append(f"| {key} | {report[key]} |")
    if report.get("token_view"):
        lines += ["", "How sample sentences are cut (`|` between tokens, `·` a space):", ""]
        lines += [f"- `{view}`" for view in report["token_view"].values()]
    lines += ["", "Longest tokens: " + ", ".join(f"`{t!r}`" for t in report["longest_tokens"])]
    if "roundtrip_first_failure" in report:
        lines += ["", f"First round-trip failure: `{json.dumps(report['roundtrip_first_failure'], ensure_ascii=False)}`"]
    return "\n".join(lines) + "\n"

