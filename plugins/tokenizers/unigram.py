"""Unigram language-model tokenizer (SentencePiece-style) with byte fallback and chat special tokens.

Why Unigram: it is the algorithm behind SentencePiece models (T5, Gemma, ...): it prunes a large candidate
vocabulary by likelihood, so pieces follow morphology more than BPE's greedy merges, and spaces become
``▁`` (Metaspace), so no language needs a whitespace pre-tokenizer. Trained with HF ``tokenizers`` (streamed)
rather than the sentencepiece library, so the output is a ``tokenizer.json`` that ``AutoTokenizer`` loads
like the other plugins'. Byte fallback (256 ``<0xNN>`` pieces, as in Llama/Gemma) spells characters the
vocabulary lacks as UTF-8 bytes instead of ``<|unk|>``, so ordinary text round-trips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lmforge.errors import ConfigError
from lmforge.plugins.tokenizers.subword import SubwordConfig, SubwordTokenizer, escape_chars

SPACE = "\u2581"  # ▁, SentencePiece's visible space


@dataclass
class UnigramConfig(SubwordConfig):
    vocab_size: int = 2048  # includes the 256 byte-fallback pieces when byte_fallback is on
    byte_fallback: bool = True
    max_piece_length: int = 16
    shrinking_factor: float = 0.75


class UnigramTokenizer(SubwordTokenizer):
    """Trains a Unigram LM tokenizer on the text input and saves a chat-ready tokenizer directory."""

    config_class = UnigramConfig
    algorithm = "unigram"

    def build(self, specials, context):
        from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
        from tokenizers import Tokenizer as HFTokenizer

        cfg = self.config
        vocab_size = cfg.vocab_size - (256 if cfg.byte_fallback else 0)
        if vocab_size <= len(specials) + 1:
            raise ConfigError(f"tokenizer.vocab_size: {cfg.vocab_size} is too small for {len(specials)} special "
                              f"tokens{' and 256 byte-fallback pieces' if cfg.byte_fallback else ''}")
        tokenizer = HFTokenizer(models.Unigram())
        # The trainer puts the special tokens into the piece vocabulary, where the search for the likeliest
        # segmentation would pick them for plain text like "<|end|>" (no score is low enough: the penalty for an
        # unknown character follows the lowest score). Isolating their first characters ("<") as pieces of their
        # own makes every special token, two characters or more, unreachable from text.
        firsts = "".join(f"\\x{{{ord(c):X}}}" for c in escape_chars(specials))
        # No space is prepended to the text (SentencePiece does; it loses a leading space on decode).
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True),
            pre_tokenizers.Split(Regex(f"[{firsts}]"), behavior="isolated"),
        ])
        tokenizer.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=cfg.unk_token,
                                          show_progress=False, max_piece_length=cfg.max_piece_length,
                                          shrinking_factor=cfg.shrinking_factor)
        return tokenizer, trainer

    def finish(self, tokenizer):
        """Add the 256 byte pieces for byte fallback, scored below every learned piece so text never prefers them."""
        from tokenizers import decoders, models

        cfg = self.config
        model = json.loads(tokenizer.to_str())["model"]
        floor = min(score for _, score in model["vocab"]) - 10.0
        vocab = [(piece, score) for piece, score in model["vocab"]]
        if cfg.byte_fallback:
            known = {piece for piece, _ in vocab}
            vocab += [(f"<0x{byte:02X}>", floor) for byte in range(256) if f"<0x{byte:02X}>" not in known]
        tokenizer.model = models.Unigram(vocab, unk_id=model["unk_id"], byte_fallback=cfg.byte_fallback)
        if cfg.byte_fallback:
            tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(),
                                                   decoders.Fuse()])
        return tokenizer

    def token_bytes(self, token: str) -> int:
        if token.startswith("<0x") and len(token) == 6:
            return 1
        return len(token.replace(SPACE, " ").encode("utf-8"))
