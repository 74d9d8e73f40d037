"""WordPiece tokenizer (BERT-style) with chat special tokens and a chat template.

Why WordPiece: it is BERT's algorithm, still the usual choice for encoders and classifiers (reward models
built on encoders, retrieval). It splits text on whitespace and punctuation first, then into the longest
known pieces (``##`` marks a piece inside a word), so decoding rebuilds words joined by single spaces: the
original spacing is not kept, and a word with a character never seen in training becomes ``<|unk|>``.
Prefer byte-level BPE for causal language models. Trained by streaming with HF ``tokenizers``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.plugins.tokenizers.subword import SubwordConfig, SubwordTokenizer


@dataclass
class WordPieceConfig(SubwordConfig):
    min_frequency: int = 2
    continuing_subword_prefix: str = "##"
    lowercase: bool = False
    max_input_chars_per_word: int = 100  # longer words become <|unk|>


class WordPieceTokenizer(SubwordTokenizer):
    """Trains a WordPiece tokenizer on the text input and saves a chat-ready tokenizer directory."""

    config_class = WordPieceConfig
    algorithm = "wordpiece"

    def build(self, specials, context):
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

        cfg = self.config
        tokenizer = HFTokenizer(models.WordPiece(unk_token=cfg.unk_token, continuing_subword_prefix=cfg.continuing_subword_prefix,
                                                 max_input_chars_per_word=cfg.max_input_chars_per_word))
        if cfg.lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix=cfg.continuing_subword_prefix, cleanup=True)
        trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                            special_tokens=specials, show_progress=False,
                                            continuing_subword_prefix=cfg.continuing_subword_prefix)
        return tokenizer, trainer

    def token_bytes(self, token: str) -> int:
        return len(token.removeprefix(self.config.continuing_subword_prefix).encode("utf-8"))
