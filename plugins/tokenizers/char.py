"""Character-level tokenizer: one token per character seen in the training text, plus chat special tokens.

Why a character tokenizer: small corpora (Tiny Shakespeare, nanoGPT's reference) and teaching runs want a
vocabulary of a few dozen symbols, where every token is readable and bits per byte equals loss / ln 2 for
ASCII text. It is an HF ``tokenizers`` WordLevel model over single characters, so the output directory
loads with plain ``AutoTokenizer.from_pretrained`` and no lmforge import.

Special tokens, the chat template and its escaping of special-token look-alikes in message content are
those of the subword plugins (``subword.py``: ``<|bos|>``, ``<|eos|>``, ``<|pad|>``, ``<|unk|>``,
``<|system|>`` / ``<|user|>`` / ``<|assistant|>`` / ``<|end|>``), so a char model fine-tunes and chats
like a BPE one; a character not seen in training becomes ``<|unk|>``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lmforge import Tokenizer
from lmforge.errors import ConfigError, DataError
from lmforge.plugins.lib.data import iter_texts
from lmforge.plugins.tokenizers.subword import ESCAPE, ChatTokensConfig, escape_chars, save_chat_tokenizer


@dataclass
class CharConfig(ChatTokensConfig):
    min_frequency: int = 1  # characters seen fewer times become <|unk|>


class CharTokenizer(Tokenizer):
    """Counts the characters of the text input and saves a chat-ready character-level tokenizer directory."""

    config_class = CharConfig

    def run(self, inputs, output_dir, context):
        from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        cfg = self.config
        if len(cfg.chat_tokens) != 4:
            raise ConfigError(f"tokenizer.chat_tokens: expected 4 tokens (system, user, assistant, end-of-turn), "
                              f"got {len(cfg.chat_tokens)}")
        specials = [cfg.pad_token, cfg.bos_token, cfg.eos_token, cfg.unk_token, *cfg.chat_tokens,
                    *cfg.extra_special_tokens]
        short = next((t for t in specials if len(t) < 2 or ESCAPE in t), None)
        if short is not None:
            raise ConfigError(f"tokenizer: special token {short!r} must have 2+ characters and no U+FDD0")
        started = time.time()
        counts: Counter[str] = Counter()
        seen_bytes = 0
        for batch in iter_texts(inputs["text"], cfg.text_field):
            for text in batch:
                counts.update(text)
                seen_bytes += len(text.encode("utf-8"))
        chars = sorted(c for c, n in counts.items() if n >= cfg.min_frequency and c != ESCAPE)
        if not chars:
            raise DataError(f"{inputs['text']}: no characters seen at least {cfg.min_frequency} times "
                            "(tokenizer.min_frequency)")
        vocab = {token: index for index, token in enumerate(specials)}
        for char in chars:
            vocab.setdefault(char, len(vocab))
        tokenizer = HFTokenizer(models.WordLevel(vocab=vocab, unk_token=cfg.unk_token))
        # the chat template's escape mark (U+FDD0 after a special token's first character) is dropped again here
        firsts = "".join(f"\\x{{{ord(c):X}}}" for c in escape_chars(specials))
        tokenizer.normalizer = normalizers.Replace(Regex(f"(?<=[{firsts}])\\x{{{ord(ESCAPE):X}}}"), "")
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()
        hf = save_chat_tokenizer(tokenizer, cfg, specials, output_dir)
        seconds = time.time() - started
        stats = {"vocab_size": len(hf), "characters": len(chars), "train_bytes": seen_bytes,
                 "train_seconds": round(seconds, 3)}
        (Path(output_dir) / "tokenizer_report.json").write_text(json.dumps(stats, indent=2))
        context.log_metrics(stats)
        return output_dir
