"""Tokenizer plugins: train a subword tokenizer with chat special tokens and a chat template."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("tokenizer", "bpe", "lmforge.plugins.tokenizers.bpe:ByteLevelBPE")
    registry.add("tokenizer", "unigram", "lmforge.plugins.tokenizers.unigram:UnigramTokenizer")
    registry.add("tokenizer", "wordpiece", "lmforge.plugins.tokenizers.wordpiece:WordPieceTokenizer")
    registry.add("tokenizer", "char", "lmforge.plugins.tokenizers.char:CharTokenizer")
